# Both packages build from this repository (the parent of the external tree).
HV_REPO_DIR = $(realpath $(BR2_EXTERNAL_HV_PATH)/..)

include $(sort $(wildcard $(BR2_EXTERNAL_HV_PATH)/package/*/*.mk))
