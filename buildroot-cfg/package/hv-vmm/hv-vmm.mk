################################################################################
#
# hv-vmm
#
################################################################################

HV_VMM_VERSION = 0.1.0
HV_VMM_SITE = $(HV_REPO_DIR)
HV_VMM_SITE_METHOD = local
HV_VMM_LICENSE = Apache-2.0
HV_VMM_SUBDIR = vmm
HV_VMM_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = --exclude /target --exclude /out

# See hv-init.mk: local sources are not vendored by the cargo infrastructure.
define HV_VMM_CARGO_VENDOR
	cd $(@D) && mkdir -p .cargo && \
		$(HOST_MAKE_ENV) $(PKG_COMMON_CARGO_ENV) \
		cargo vendor --locked VENDOR > .cargo/config.toml
endef
HV_VMM_PRE_BUILD_HOOKS += HV_VMM_CARGO_VENDOR

define HV_VMM_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/vmm \
		$(TARGET_DIR)/bin/vmm
endef

$(eval $(cargo-package))
