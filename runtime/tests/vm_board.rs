//! The board-in-a-VM test (x86_64): `scripts/vm-test.sh` boots a Debian kernel under
//! qemu-system with the vivid camera and a bochs framebuffer, runs `vessel camera` for six
//! frames (hot-unplugging the camera after the second and plugging it back), and checks the
//! screen read back from qemu against what the program drew. Needs the packages of
//! `scripts/install-test-deps.sh` (CI installs them). It drives qemu-system-x86_64 with this
//! build; the aarch64 run (emulated Cortex-A72) is in `scripts/test.sh`.
#![cfg(target_arch = "x86_64")]

use std::process::Command;

#[test]
#[ignore = "needs qemu, busybox and Debian's package mirror: scripts/install-test-deps.sh (scripts/test.sh runs it)"]
fn camera_to_framebuffer_in_a_virtual_machine() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/vm-test.sh"))
        .args(["x86_64", env!("CARGO_BIN_EXE_vessel"), "6"])
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "VM test failed (install its packages with scripts/install-test-deps.sh)\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("vm-test ok: 6 frames, camera unplugged and reopened"),
        "{stdout}"
    );
}
