################################################################################
#
# hv-init
#
################################################################################

HV_INIT_VERSION = 0.1.0
HV_INIT_SITE = $(HV_REPO_DIR)
HV_INIT_SITE_METHOD = local
HV_INIT_LICENSE = Apache-2.0
# Build only this workspace member; Cargo.lock at the root still applies.
HV_INIT_SUBDIR = init
HV_INIT_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude /target --exclude /out

# A local site skips the download step, and with it the vendoring that
# Buildroot's cargo infrastructure does for remote sources; vendor here so
# that its `cargo build --offline` finds every crate. A pre-build hook, as
# only then is host-rustc (cargo) guaranteed to be built.
define HV_INIT_CARGO_VENDOR
	cd $(@D) && mkdir -p .cargo && \
		$(HOST_MAKE_ENV) $(PKG_COMMON_CARGO_ENV) \
		cargo vendor --locked VENDOR > .cargo/config.toml
endef
HV_INIT_PRE_BUILD_HOOKS += HV_INIT_CARGO_VENDOR

# The initramfs layout is a contract with the image: the binary is /init.
define HV_INIT_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/init \
		$(TARGET_DIR)/init
endef

$(eval $(cargo-package))
