# nooelint: oelint.var.mandatoryvar.HOMEPAGE - grabd has no public home page yet
SUMMARY = "Field recorder: synchronized chunked MKV recording that survives power cuts"
DESCRIPTION = "grabd records V4L2 cameras and an I2C IMU into chunked Matroska files \
               on a button press, fsyncs every step, recovers cut-off recordings at \
               boot and runs as a hardened systemd service."
SECTION = "multimedia"
LICENSE = "MIT | Apache-2.0"
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=86b31c7756a1a7962f28b62856ed4f05"

DEPENDS += "clang-native ffmpeg"

PV = "0.1.0+git"

# The repository this layer lives in, at the commit checked out (conf/layer.conf).
SRC_URI = "git://${GRABD_REPO_DIR};protocol=file;nobranch=1 \
           file://grabd.toml \
           "
SRCREV = "${GRABD_SRCREV}"

inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

require ${BPN}-crates.inc

# bindgen (ffmpeg-sys-next, v4l2-sys-mit) needs libclang and the target's sysroot;
# ffmpeg-sys-next passes --sysroot itself only with its `build` feature.
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
BINDGEN_EXTRA_CLANG_ARGS = "${HOST_CC_ARCH}${TOOLCHAIN_OPTIONS} --target=${TARGET_SYS}"
export BINDGEN_EXTRA_CLANG_ARGS

# The same user and groups as systemd/grabd.sysusers (the image's rootfs check compares
# them), made at build time since the image's root file system is read-only.
USERADD_PACKAGES = "${PN}"
GROUPADD_PARAM:${PN} = "--system gpio; --system i2c"
USERADD_PARAM:${PN} = "--system --user-group --no-create-home --home-dir / --shell /sbin/nologin grabd"

# grabd-poweroff.path powers off on grabd's long press (grabd has no right to).
SYSTEMD_SERVICE:${PN} = "grabd.service grabd-poweroff.path"

do_install:append() {
    install -D -m 0644 ${S}/systemd/grabd.service ${D}${systemd_system_unitdir}/grabd.service
    install -m 0644 ${S}/systemd/grabd-poweroff.path ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/grabd-poweroff.service ${D}${systemd_system_unitdir}/
    install -D -m 0644 ${S}/systemd/grabd.sysusers ${D}${nonarch_libdir}/sysusers.d/grabd.conf
    install -D -m 0644 ${S}/systemd/grabd.tmpfiles ${D}${nonarch_libdir}/tmpfiles.d/grabd.conf
    install -D -m 0644 ${S}/systemd/60-grabd.rules ${D}${nonarch_base_libdir}/udev/rules.d/60-grabd.rules
    install -D -m 0644 ${UNPACKDIR}/grabd.toml ${D}${sysconfdir}/grabd/grabd.toml
}

# The default config differs per machine: files/grabd.toml (libx264: Pi 5 and the rest),
# files/raspberrypi4-64/grabd.toml (the hardware encoder).
PACKAGE_ARCH = "${MACHINE_ARCH}"

FILES:${PN} += "\
    ${nonarch_libdir}/sysusers.d/grabd.conf \
    ${nonarch_libdir}/tmpfiles.d/grabd.conf \
    ${nonarch_base_libdir}/udev/rules.d/60-grabd.rules \
"
CONFFILES:${PN} = "${sysconfdir}/grabd/grabd.toml"
