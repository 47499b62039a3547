SUMMARY = "Minimal image that boots into the grabd field recorder"
DESCRIPTION = "A read-only root file system with systemd and grabd; recordings go \
               to the /data partition (files/wic/grabd-sdimage.wks)."
LICENSE = "MIT"

inherit core-image

IMAGE_INSTALL = "packagegroup-core-boot grabd ${CORE_IMAGE_EXTRA_INSTALL}"
IMAGE_FEATURES += "read-only-rootfs"
IMAGE_LINGUAS = ""

IMAGE_FSTYPES = "wic.bz2 wic.bmap"
WKS_FILE = "grabd-sdimage.wks"
