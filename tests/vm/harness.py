#!/usr/bin/env python3
"""Boots the appliance image in QEMU and checks it from outside.

The VM: q35, UEFI (OVMF), the image behind a qcow2 overlay (the built image
stays clean), KVM when a smoke test shows it runs a guest, TCG otherwise.
NICs, in this PCI order and with the MACs of the image's default config:

  00:03.0  52:54:00:12:34:56  management: QEMU user networking; SSH (and the
                              web API's HTTPS, 443) forwarded to 127.0.0.1 ports
  00:04.0  52:54:00:12:34:57  data0: a tap in a network namespace this
  00:05.0  52:54:00:12:34:58  data1: harness makes, where both taps sit on a
                              bridge with 192.168.100.1/24 (the default
                              config's gateway): the test clients live there

Serial console to serial.log, QEMU monitor on monitor.sock (set_link cuts a
data NIC's link). Everything (QEMU, taps, namespace) is torn down on exit,
even on Ctrl-C; the run directory with the serial log is kept on failure.

Only stdlib: CI needs nothing but apt packages (qemu-system-x86, ovmf,
openssh-client, iproute2, redis-tools; chromium, and Node.js with npm, for the
dashboard's browser check, which installs playwright-core, the driver
only, under target/browser-test on first use).
"""

import argparse
import ctypes
import fcntl
import os
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import http.cookiejar
import json
import ssl
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MACS = {"mgmt": "52:54:00:12:34:56", "data0": "52:54:00:12:34:57", "data1": "52:54:00:12:34:58"}
PCI = {"mgmt": "0x3", "data0": "0x4", "data1": "0x5"}
GUEST_PCI = {"data0": "0000:00:04.0", "data1": "0000:00:05.0"}
HOST_NS_ADDR = "192.168.100.1/24"
REDIS_ADDR = "192.168.100.10"
# The kernel's data address, on ltran's exception interface (image/rootfs/
# etc/systemd/network/15-kni.network).
KNI_ADDR = "192.168.100.2"
# The instance the browser check adds (in the default config's subnet).
BROWSER_NEW_ADDR, BROWSER_NEW_PORT = "192.168.100.20", "16392"
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_SCRIPT = REPO / "webui/tests/browser/dashboard.cjs"
# Where the browser check's screenshots and log go (kept after a passing run).
BROWSER_ARTIFACTS = REPO / "target/vm-browser-artifacts"
DISK_EXTRA = 2 << 30  # bytes the VM's disk has beyond the image
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000


def log(msg):
    print(f"[vm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, text=True, **kw)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CheckFailed(Exception):
    pass


# ----------------------------------------------------------------- KVM probe
def kvm_works():
    """True when KVM runs a guest: a 512-byte boot sector that writes 'K' to
    the serial port and leaves through isa-debug-exit (exit code 33)."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    code = bytes.fromhex("b04b" "baf803" "ee" "b010" "e6f4" "f4" "ebfd")
    sector = code + bytes(510 - len(code)) + b"\x55\xaa"
    with tempfile.TemporaryDirectory() as d:
        img = Path(d, "boot.img")
        img.write_bytes(sector)
        try:
            p = run(["qemu-system-x86_64", "-accel", "kvm", "-machine", "q35", "-nodefaults",
                     "-display", "none", "-m", "64", "-serial", "stdio",
                     "-drive", f"file={img},format=raw,if=ide",
                     "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"],
                    check=False, capture_output=True, timeout=8)
        except subprocess.TimeoutExpired:
            return False
        return p.returncode == 33 and "K" in p.stdout


# ------------------------------------------------------- namespace and taps
class HostNet:
    """A network namespace with two taps (QEMU's data NICs) on a bridge."""

    def __init__(self, name):
        self.name = name
        self.fds = {}
        run(["ip", "netns", "add", name])
        self.ns("ip", "link", "set", "lo", "up")
        libc = ctypes.CDLL(None, use_errno=True)
        own = os.open("/proc/self/ns/net", os.O_RDONLY)
        theirs = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            if libc.setns(theirs, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns into the test namespace")
            try:
                for i, nic in enumerate(("data0", "data1")):
                    fd = os.open("/dev/net/tun", os.O_RDWR)
                    ifr = struct.pack("16sH", f"tapd{i}".encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)
                    fcntl.ioctl(fd, TUNSETIFF, ifr)
                    self.fds[nic] = fd
            finally:
                if libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back to the host namespace")
        finally:
            os.close(own)
            os.close(theirs)
        self.ns("ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0")
        for i in range(2):
            self.ns("ip", "link", "set", f"tapd{i}", "master", "br0", "up")
        self.ns("ip", "addr", "add", HOST_NS_ADDR, "dev", "br0")
        self.ns("ip", "link", "set", "br0", "up")

    def ns(self, *cmd, **kw):
        return run(["ip", "netns", "exec", self.name, *cmd], **kw)

    def close(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}
        run(["ip", "netns", "del", self.name], check=False, stderr=subprocess.DEVNULL)


# -------------------------------------------------------------------- the VM
class VM:
    def __init__(self, image, rundir, key, net, accel, mem, cpus, viommu=False):
        self.image, self.rundir, self.key, self.net = image, rundir, key, net
        self.viommu = viommu
        self.accel, self.mem, self.cpus = accel, mem, cpus
        self.serial = rundir / "serial.log"
        self.monitor = rundir / "monitor.sock"
        self.ssh_port = free_port()
        self.web_port = free_port()
        self.proc = None
        self.overlay = rundir / "disk.qcow2"
        # Larger than the image: the image grows its root partition at boot.
        size = image.stat().st_size + DISK_EXTRA
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image), str(self.overlay), str(size)])
        self.vars = rundir / "OVMF_VARS.fd"
        shutil.copyfile(OVMF_VARS, self.vars)

    def start(self):
        fwd = f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22,hostfwd=tcp:127.0.0.1:{self.web_port}-:443"
        accel = ["-accel", "kvm", "-cpu", "host"] if self.accel == "kvm" else ["-accel", "tcg", "-cpu", "max"]
        # A vIOMMU lets the guest use vfio-pci (Debian's kernel has no
        # VFIO_NOIOMMU); uio_pci_generic, the default, needs none.
        machine = "q35,kernel-irqchip=split" if self.viommu else "q35"
        iommu = ["-device", "intel-iommu,intremap=on,caching-mode=on"] if self.viommu else []
        cmd = ["qemu-system-x86_64", "-machine", machine, *accel, *iommu, "-smp", str(self.cpus), "-m", str(self.mem),
               "-nodefaults", "-display", "none", "-no-user-config",
               "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
               "-drive", f"if=pflash,format=raw,unit=1,file={self.vars}",
               "-drive", f"if=none,id=disk,file={self.overlay},format=qcow2,cache=unsafe,discard=unmap",
               "-device", "virtio-blk-pci,drive=disk,addr=0x6",
               "-netdev", f"user,id=mgmt,{fwd}",
               "-device", f"virtio-net-pci,netdev=mgmt,id=mgmt,mac={MACS['mgmt']},addr={PCI['mgmt']}",
               "-chardev", f"file,id=serial,path={self.serial},append=on",
               "-serial", "chardev:serial",
               "-monitor", f"unix:{self.monitor},server,nowait",
               "-device", "virtio-rng-pci"]
        # Behind a vIOMMU a virtio device must translate its DMA through it
        # (iommu_platform): DPDK hands it IOVAs, not guest-physical
        # addresses, and without translation the first control-queue command
        # never completes and the PMD waits forever.
        translated = ",disable-legacy=on,iommu_platform=on,ats=on" if self.viommu else ""
        for nic in ("data0", "data1"):
            cmd += ["-netdev", f"tap,id={nic}net,fd={self.net.fds[nic]},vhost=off",
                    "-device", f"virtio-net-pci,netdev={nic}net,id={nic},mac={MACS[nic]},addr={PCI[nic]}{translated}"]
        (self.rundir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
        self.proc = subprocess.Popen(cmd, pass_fds=list(self.net.fds.values()),
                                     stdout=open(self.rundir / "qemu.log", "ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def hmp(self, command):
        """One QEMU monitor (HMP) command; returns its output."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.monitor))
            buf = b""
            while not buf.endswith(b"(qemu) "):
                buf += s.recv(4096)
            s.sendall(command.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"(qemu) "):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        # The monitor echoes the command line (with cursor escapes) first.
        text = buf.decode(errors="replace")
        return text.split("\r\n", 1)[-1].removesuffix("(qemu) ").strip()

    def set_link(self, nic, up):
        out = self.hmp(f"set_link {nic} {'on' if up else 'off'}")
        if out:
            raise CheckFailed(f"QEMU monitor: set_link {nic}: {out}")

    def ssh_cmd(self, command, timeout=5):
        return ["ssh", "-i", str(self.key), "-p", str(self.ssh_port),
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                "-o", f"ConnectTimeout={timeout}", "-o", "ServerAliveInterval=5",
                "root@127.0.0.1", command]

    def ssh(self, command, timeout=120, check=True):
        p = run(self.ssh_cmd(command), check=False, capture_output=True, timeout=timeout)
        if check and p.returncode != 0:
            shown = command.splitlines()[0] + (" ..." if "\n" in command else "")
            raise CheckFailed(f"`{shown}` exited {p.returncode}: {(p.stdout + p.stderr).strip()}")
        return p

    def wait_ready(self, timeout):
        """Polls until SSH answers and systemd has finished booting; returns
        systemd's state (running, degraded, ...)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise CheckFailed(f"QEMU exited with {self.proc.returncode} during boot")
            try:
                p = run(self.ssh_cmd("systemctl is-system-running --wait", timeout=5), check=False,
                        capture_output=True, timeout=max(10, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue
            state = p.stdout.strip()
            if state in ("running", "degraded", "maintenance", "stopping"):
                return state
            time.sleep(2)
        raise CheckFailed(f"not ready after {timeout} s (no SSH or systemd still starting)")

    def reboot(self, timeout=600):
        """Reboots the guest and waits until the new boot is ready."""
        boot_id = self.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
        try:
            self.ssh("systemctl reboot", check=False, timeout=15)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + timeout
        while True:
            self.wait_ready(max(1, deadline - time.monotonic()))
            try:
                p = self.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
                if p.returncode == 0 and p.stdout.strip() not in ("", boot_id):
                    return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise CheckFailed(f"no new boot {timeout} s after `systemctl reboot`")
            time.sleep(2)

    def shutdown(self, timeout=90):
        if not self.alive():
            return
        try:
            self.ssh("systemctl poweroff", timeout=15, check=False)
        except subprocess.TimeoutExpired:
            pass
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# ------------------------------------------------------------------ checks
class Checks:
    """Each check_* raises CheckFailed with what is wrong. base checks always
    run; the others run when the binary they test is in the image, and then
    must pass."""

    def __init__(self, vm, net):
        self.vm, self.net = vm, net
        self.results = []  # (name, status, detail)

    def has(self, path):
        return self.vm.ssh(f"test -x {path}", check=False).returncode == 0

    def run(self, name, fn, needs=(), after=()):
        """Runs check `fn` when every file in `needs` is in the image; a
        check whose prerequisite (a name in `after`) failed fails at once."""
        absent = [p for p in needs if not self.has(p)]
        if absent:
            why = f"{', '.join(absent)} not in the image"
            self.results.append((name, "NOT RUN", why))
            log(f"NOT RUN {name}: {why}")
            return
        broken = [n for n, status, _ in self.results if n in after and status != "PASS"]
        if broken:
            why = f"not attempted: {'; '.join(broken)} did not pass"
            self.results.append((name, "FAIL", why))
            log(f"FAIL    {name}: {why}")
            return
        t0 = time.monotonic()
        try:
            detail = fn() or ""
            self.results.append((name, "PASS", detail))
            log(f"PASS    {name} ({time.monotonic() - t0:.1f} s) {detail}")
        except (CheckFailed, subprocess.TimeoutExpired) as e:
            why = str(e)
            if "/usr/sbin/applianced" in needs:
                why += "\n" + self.appliance_diagnostics()
            self.results.append((name, "FAIL", why))
            log(f"FAIL    {name} ({time.monotonic() - t0:.1f} s): {why}")

    def appliance_diagnostics(self):
        """What the daemon says about its processes, and its last warnings."""
        try:
            status = self.vm.ssh("appliancectl status 2>&1 || true", timeout=60, check=False).stdout.strip()
            warn = self.vm.ssh("journalctl -b -u gazelle-appliance.service --no-pager -o cat "
                               "| grep -E ' (WARN|ERROR) |rror|FATAL|unrecognized' | tail -8",
                               timeout=60, check=False).stdout.strip()
        except subprocess.TimeoutExpired:
            return "(no diagnostics: SSH timed out)"
        return f"appliancectl status:\n{status}\nlast warnings of gazelle-appliance.service:\n{warn}"

    def failed(self):
        return [r for r in self.results if r[1] == "FAIL"]

    def passed(self, name):
        return any(n == name and status == "PASS" for n, status, _ in self.results)

    # --- base: what the image itself sets up
    def system_running(self):
        state = self.vm.ssh("systemctl is-system-running", check=False).stdout.strip()
        failed = self.vm.ssh("systemctl list-units --failed --no-legend --plain").stdout.strip()
        if state != "running" or failed:
            raise CheckFailed(f"system is {state}; failed units: {failed or 'none'}")
        return "running, no failed units"

    def kernel_cmdline(self):
        cmdline = self.vm.ssh("cat /proc/cmdline").stdout.split()
        for want in ("console=ttyS0,115200", "systemd.firstboot=no"):
            if want not in cmdline:
                raise CheckFailed(f"{want} not in /proc/cmdline: {' '.join(cmdline)}")
        root = self.vm.ssh("findmnt -no OPTIONS /").stdout
        if "rw" not in root.split(","):
            raise CheckFailed(f"/ is not mounted read-write: {root.strip()}")

    def root_grown(self):
        """The root partition and file system grew over the larger disk."""
        disk = int(self.vm.ssh("lsblk -bdno SIZE /dev/vda").stdout)
        root = int(self.vm.ssh("findmnt -bno SIZE /").stdout)
        if root < disk - (1 << 30):
            raise CheckFailed(f"/ is {root >> 20} MiB on a {disk >> 20} MiB disk: not grown "
                              f"(systemd-repart/systemd-growfs)")
        return f"/ {root >> 20} MiB on a {disk >> 20} MiB disk"

    def root_locked(self):
        status = self.vm.ssh("passwd -S root").stdout.split()
        if len(status) < 2 or status[1] != "L":
            raise CheckFailed(f"root's password is not locked: {' '.join(status)}")
        conf = self.vm.ssh("sshd -T").stdout
        if "passwordauthentication no" not in conf:
            raise CheckFailed("sshd allows password authentication")
        return "root locked, SSH by key only"

    def management_nic(self):
        link = self.vm.ssh(f"ip -o link | grep -i '{MACS['mgmt']}' | cut -d: -f2", check=False).stdout.strip()
        if not link:
            raise CheckFailed(f"no NIC with MAC {MACS['mgmt']}")
        addr = self.vm.ssh(f"ip -o -4 addr show dev {link}").stdout
        if "inet " not in addr:
            raise CheckFailed(f"management NIC {link} has no IPv4 address (DHCP)")
        return f"{link}: {addr.split()[3]}"

    def data_nics(self):
        """Both data NICs are there: as kernel interfaces without addresses,
        or bound to a DPDK driver."""
        notes = []
        for nic in ("data0", "data1"):
            pci = GUEST_PCI[nic]
            drv = self.vm.ssh(f"basename $(readlink /sys/bus/pci/devices/{pci}/driver) 2>/dev/null",
                              check=False).stdout.strip()
            if drv in ("uio_pci_generic", "vfio-pci", "igb_uio"):
                notes.append(f"{nic} {pci} on {drv}")
                continue
            link = self.vm.ssh(f"ls /sys/bus/pci/devices/{pci}/virtio*/net 2>/dev/null", check=False).stdout.strip()
            if not link:
                raise CheckFailed(f"{nic} ({pci}, {MACS[nic]}) is missing (driver: {drv or 'none'})")
            mac = self.vm.ssh(f"cat /sys/class/net/{link}/address").stdout.strip()
            if mac != MACS[nic]:
                raise CheckFailed(f"{nic} {link} has MAC {mac}, want {MACS[nic]}")
            addrs = self.vm.ssh(f"ip -o addr show dev {link}").stdout.strip()
            if addrs:
                raise CheckFailed(f"data NIC {link} has kernel addresses: {addrs}")
            notes.append(f"{nic} {link} on the kernel, no addresses")
        return "; ".join(notes)

    def hugepages(self):
        unit = self.vm.ssh("systemctl is-active gazelle-hugepages.service", check=False).stdout.strip()
        if unit != "active":
            log_ = self.vm.ssh("journalctl -b -u gazelle-hugepages.service --no-pager | tail -20",
                               check=False).stdout
            raise CheckFailed(f"gazelle-hugepages.service is {unit}:\n{log_}")
        total = int(self.vm.ssh("cat /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages").stdout)
        if total < 1024:
            raise CheckFailed(f"{total} 2 MiB hugepages reserved, want >= 1024")
        mounts = self.vm.ssh("findmnt -rn -t hugetlbfs -o TARGET,OPTIONS").stdout
        for d in ("/mnt/hugepages-ltran", "/mnt/hugepages-lstack"):
            line = next((m for m in mounts.splitlines() if m.split()[0] == d), None)
            if not line or "pagesize=2M" not in line:
                raise CheckFailed(f"{d} is not a hugetlbfs mount with pagesize=2M: {mounts}")
        return f"{total} x 2M, both mounts"

    def our_binaries(self):
        out = self.vm.ssh("ldd /usr/lib/gazelle/liblstack.so /usr/bin/gazellectl /usr/bin/lstack-echo").stdout
        if "not found" in out:
            raise CheckFailed(f"missing libraries:\n{out}")
        self.vm.ssh("gazellectl --help >/dev/null && lstack-echo --help >/dev/null")
        cfg = self.vm.ssh("cat /etc/gazelle/appliance.toml").stdout
        if MACS["data0"] not in cfg:
            raise CheckFailed("/etc/gazelle/appliance.toml is not the default config")
        return "liblstack.so, gazellectl, lstack-echo load; default config present"

    # --- appliance: applianced (and ltran) in the image
    def appliance_active(self):
        state = self.vm.ssh("systemctl is-active gazelle-appliance.service", check=False).stdout.strip()
        if state != "active":
            j = self.vm.ssh("journalctl -b -u gazelle-appliance.service --no-pager | tail -30", check=False).stdout
            raise CheckFailed(f"gazelle-appliance.service is {state}:\n{j}")
        # The daemon opens its control socket once it has applied the config.
        self.wait_for("the control socket", "test -S /run/gazelle/appliance.sock", 120)
        state = self.vm.ssh("systemctl is-active gazelle-appliance.service", check=False).stdout.strip()
        if state != "active":
            raise CheckFailed(f"gazelle-appliance.service is {state} after opening its socket")

    def nics_bound(self):
        """Both data NICs end up on the DPDK driver the default config picks
        (the daemon binds them): vfio-pci behind a vIOMMU, else
        uio_pci_generic."""
        want = "vfio-pci" if self.vm.viommu else "uio_pci_generic"
        deadline = time.monotonic() + 60
        while True:
            drivers = {nic: self.vm.ssh(f"basename $(readlink /sys/bus/pci/devices/{pci}/driver) 2>/dev/null",
                                        check=False).stdout.strip() for nic, pci in GUEST_PCI.items()
                       if nic != "mgmt"}
            if all(d == want for d in drivers.values()):
                return ", ".join(f"{n} on {d}" for n, d in drivers.items())
            if time.monotonic() > deadline:
                raise CheckFailed(f"data NICs not on {want} after 60 s: {drivers}")
            time.sleep(2)

    def ltran_up(self):
        """ltran answers gazellectl, and its EAL was given exactly the data
        NICs as its allow-list (so it never probes the management NIC)."""
        self.wait_for("ltran's control socket", "gazellectl ltran show >/dev/null 2>&1", 90)
        out = self.vm.ssh("gazellectl ltran show").stdout
        conf = tomllib.loads(self.vm.ssh("cat /run/gazelle/appliance/ltran.toml").stdout)
        args = conf.get("forward_kit_args", [])
        allowed = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-a"]
        want = [GUEST_PCI["data0"], GUEST_PCI["data1"]]
        if allowed != want:
            raise CheckFailed(f"ltran's EAL allow-list is {allowed}, want {want}: forward_kit_args = {args}")
        first = out.strip().splitlines()[0] if out.strip() else ""
        return f"{first}; EAL allow-list {' '.join(allowed)}"

    def wait_for(self, what, command, timeout):
        deadline = time.monotonic() + timeout
        while self.vm.ssh(command, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise CheckFailed(f"{what}: `{command}` still failing after {timeout} s")
            time.sleep(2)

    def redis_on_lstack(self):
        """redis-benchmark from the host namespace against the guest's redis
        on lstack: zero errors."""
        self.wait_for("redis on lstack", f"gazellectl lstack show {REDIS_ADDR} >/dev/null 2>&1", 120)
        ping = self.net.ns("timeout", "20", "redis-cli", "-h", REDIS_ADDR, "ping", capture_output=True, check=False)
        if ping.stdout.strip() != "PONG":
            raise CheckFailed(f"redis-cli -h {REDIS_ADDR} ping: {(ping.stdout + ping.stderr).strip() or 'no answer'}")
        p = self.net.ns("timeout", "300", "redis-benchmark", "-h", REDIS_ADDR, "-p", "6379", "-n", "20000",
                        "-c", "20", "-t", "set,get", "-q", capture_output=True, check=False)
        out = (p.stdout + p.stderr).strip()
        if p.returncode != 0 or "error" in out.lower() or "requests per second" not in out:
            raise CheckFailed(f"redis-benchmark exited {p.returncode}:\n{out}")
        return " | ".join(line.strip() for line in out.splitlines() if "requests per second" in line)

    def ssh_on_data_address(self):
        """SSH from the data network to the kernel's data address: ltran hands
        what no instance owns to the kernel (kni_switch), and the kernel's
        answers leave through ltran's bond. The same machine answers as on
        the management NIC (its boot id)."""
        self.wait_for("the kernel's data address on kni",
                      f"ip -o -4 addr show dev kni | grep -q {KNI_ADDR}/", 90)
        ping = self.net.ns("ping", "-c", "3", "-W", "2", KNI_ADDR, capture_output=True, check=False)
        if ping.returncode != 0:
            raise CheckFailed(f"ping {KNI_ADDR}: {(ping.stdout + ping.stderr).strip()}")
        cmd = self.vm.ssh_cmd("cat /proc/sys/kernel/random/boot_id", timeout=10)
        at = cmd.index("-p")
        cmd[at + 1] = "22"
        cmd[-2] = f"root@{KNI_ADDR}"
        p = self.net.ns(*cmd, capture_output=True, check=False)
        want = self.vm.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
        if p.returncode != 0 or p.stdout.strip() != want:
            raise CheckFailed(f"ssh root@{KNI_ADDR} exited {p.returncode}: {(p.stdout + p.stderr).strip()}")
        counters = " ".join(self.vm.ssh("gazellectl ltran show | grep -i kni || true", check=False).stdout.split())
        return f"ping and ssh to {KNI_ADDR} answered by the kernel; {counters}"

    def bond_failover(self):
        """Cut the active data NIC's link during a transfer; the transfer
        completes over the other NIC (ltran's active-backup bond)."""
        bench = subprocess.Popen(["ip", "netns", "exec", self.net.name, "timeout", "300", "redis-benchmark", "-h", REDIS_ADDR,
                                  "-p", "6379", "-n", "200000", "-c", "10", "-d", "1024", "-t", "set", "-q"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(3)
            if bench.poll() is not None:
                raise CheckFailed(f"the transfer ended before the cut: {bench.stdout.read()}")
            self.vm.set_link("data0", False)
            out, _ = bench.communicate(timeout=330)
        finally:
            self.vm.set_link("data0", True)
            if bench.poll() is None:
                bench.kill()
                bench.wait()
        if bench.returncode != 0 or "error" in out.lower() or "requests per second" not in out:
            raise CheckFailed(f"transfer across the failover failed (exit {bench.returncode}):\n{out}")
        return out.strip().splitlines()[-1].strip()

    def ordered_stop(self):
        """`systemctl stop gazelle-appliance` stops the instances before
        ltran (no instance sees ltran go away), leaves no process behind, and
        a start brings redis back."""
        cursor = self.vm.ssh("journalctl -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'").stdout.strip()
        self.vm.ssh("systemctl stop gazelle-appliance", timeout=180)
        log = self.vm.ssh(f"journalctl -u gazelle-appliance --no-pager -o cat --after-cursor '{cursor}'").stdout
        lines = log.splitlines()

        def first(pattern):
            return next((i for i, line in enumerate(lines) if pattern in line), None)
        redis_stopped, ltran_stopping = first("stopped process=redis"), first("stopping process=ltran")
        if redis_stopped is None or ltran_stopping is None or redis_stopped > ltran_stopping:
            raise CheckFailed(f"want redis stopped before ltran is stopped; the journal says:\n{log}")
        if "went away" in log:
            raise CheckFailed(f"an instance saw ltran go away during the stop:\n{log}")
        left = self.vm.ssh("pgrep -a -x 'ltran|redis-server' || true").stdout.strip()
        if left:
            raise CheckFailed(f"left running after the stop: {left}")
        self.vm.ssh("systemctl start gazelle-appliance", timeout=600)
        self.wait_for("redis on lstack after the start", f"gazellectl lstack show {REDIS_ADDR} >/dev/null 2>&1", 120)
        deadline = time.monotonic() + 60
        while True:  # the stack answers gazellectl a moment before redis listens
            ping = self.net.ns("timeout", "20", "redis-cli", "-h", REDIS_ADDR, "ping", capture_output=True, check=False)
            if ping.stdout.strip() == "PONG":
                break
            if time.monotonic() > deadline:
                raise CheckFailed(f"redis from the host after the restart: {(ping.stdout + ping.stderr).strip() or 'no answer'}")
            time.sleep(2)
        return "redis stopped, then ltran; nothing left; back after a start"

    def web_api(self):
        """Over the forwarded HTTPS port, with the certificate the appliance
        made: log in with the first password, read the bond, change an
        instance's restart policy through REST (saved at once: it cannot
        cut anyone off); the reboot of the next check must keep it."""
        deadline = time.monotonic() + 120
        while self.vm.ssh("systemctl is-active gazelle-webui", check=False).stdout.strip() != "active":
            if time.monotonic() > deadline:
                raise CheckFailed("gazelle-webui.service not active: "
                                  + self.vm.ssh("journalctl -u gazelle-webui --no-pager | tail -n 20", check=False).stdout)
            time.sleep(2)
        cert = self.vm.rundir / "webui-cert.pem"
        cert.write_text(self.vm.ssh("cat /etc/gazelle/webui/cert.pem").stdout)
        password = self.vm.ssh("cat /var/lib/gazelle/webui/initial-admin-password").stdout.strip()
        self.web = WebApi(self.vm.web_port, cert)
        self.web.login("admin", password)
        bond = self.web.call("GET", "/api/v1/bond")
        live = bond.get("live") or {}
        if live.get("active") is None or not any(p.get("link_up") for p in live.get("ports", [])):
            raise CheckFailed(f"the bond over REST has no active port with a link: {bond}")
        change = self.web.call("PATCH", "/api/v1/instances/redis",
                               {"restart": {"mode": "always", "initial_backoff_ms": 700, "max_backoff_ms": 30000}})
        if change.get("confirmation_needed"):
            self.web.call("POST", "/api/v1/config/confirm")
        saved = self.web.call("GET", "/api/v1/config?which=saved")["toml"]
        if "initial_backoff_ms = 700" not in saved:
            raise CheckFailed(f"the REST change is not in the saved config:\n{saved}")
        audit = self.web.call("GET", "/api/v1/audit")
        if not any(e["action"] == "instance.update" and e["outcome"] == "saved" for e in audit):
            raise CheckFailed(f"no audit entry for the change: {audit}")
        return f"bond active port {live['active']}, links {[p['link_up'] for p in live['ports']]}; change saved"

    def browser_dashboard(self, failover_seen):
        """The dashboard's browser flows (webui/tests/browser/dashboard.cjs,
        the script the rig's browser test runs) against the booted image
        through the forwarded port, in Debian's headless Chromium: log in
        with the first password; live numbers and charts move while
        redis-benchmark runs from the test namespace and settle after; the
        bond page lists the failover of the earlier check; bond miimon
        changed and confirmed, another change rolled back at the deadline;
        an instance added and serving a client; a viewer sees no buttons
        that change things and is refused; labels, titles, no console
        errors. The instance it adds is removed again afterwards."""
        for what, ok in (("node", shutil.which("node")), ("npm", shutil.which("npm")),
                         (str(CHROMIUM), CHROMIUM.exists())):
            if not ok:
                raise CheckFailed(f"{what} is missing on the host (scripts/install-deps.sh installs it)")
        modules = playwright_modules()
        shutil.rmtree(BROWSER_ARTIFACTS, ignore_errors=True)
        BROWSER_ARTIFACTS.mkdir(parents=True)
        password = self.vm.ssh("cat /var/lib/gazelle/webui/initial-admin-password").stdout.strip()
        env = dict(os.environ, NODE_PATH=str(modules), CHROMIUM=str(CHROMIUM),
                   BASE=f"https://localhost:{self.vm.web_port}", PASSWORD=password,
                   ARTIFACTS=str(BROWSER_ARTIFACTS), NS=self.net.name, STACK_IP=REDIS_ADDR,
                   REDIS_PORT="6379", NEW_IP=BROWSER_NEW_ADDR, NEW_PORT=BROWSER_NEW_PORT,
                   EXPECT_FAILOVER="1" if failover_seen else "0",
                   TIMEOUT_SCALE="2" if self.vm.accel == "kvm" else "4",
                   NODE_EXTRA_CA_CERTS=str(self.vm.rundir / "webui-cert.pem"))
        try:
            p = run(["node", str(BROWSER_SCRIPT)], check=False, capture_output=True, env=env, timeout=2400)
        finally:
            self.remove_instance("redis2")
        out = (p.stdout + p.stderr).strip()
        (BROWSER_ARTIFACTS / "browser.log").write_text(out + "\n")
        if p.returncode != 0:
            tail = "\n".join(out.splitlines()[-15:])
            raise CheckFailed(f"the browser script failed (screenshots in {BROWSER_ARTIFACTS}):\n{tail}")
        steps = [line.removeprefix("browser: ") for line in out.splitlines() if line.startswith("browser: ")]
        shown = [line for line in steps if line.startswith(("latency chart", "failover history", "skipped"))]
        return f"{'; '.join(shown + steps[-1:])} (log and screenshots in {BROWSER_ARTIFACTS})"

    def remove_instance(self, name):
        """Takes an instance a check added out of the config again (through
        REST, confirmed), so the checks after it see the image's own."""
        try:
            password = self.vm.ssh("cat /var/lib/gazelle/webui/initial-admin-password").stdout.strip()
            self.web.login("admin", password)
            names = [i.get("name") for i in self.web.call("GET", "/api/v1/instances")]
            if name not in names:
                return
            if (self.web.call("DELETE", f"/api/v1/instances/{name}") or {}).get("confirmation_needed"):
                self.web.call("POST", "/api/v1/config/confirm")
        except CheckFailed as e:
            log(f"could not remove instance {name}: {e}")

    def web_change_survived(self):
        """After the reboot the REST change is what runs."""
        password = self.vm.ssh("cat /var/lib/gazelle/webui/initial-admin-password").stdout.strip()
        self.web.login("admin", password)
        redis = self.web.call("GET", "/api/v1/instances/redis")
        if redis["restart"]["initial_backoff_ms"] != 700:
            raise CheckFailed(f"after the reboot the instance has {redis['restart']}")
        return "the REST change runs after the reboot"

    def config_survives_reboot(self):
        """A config change made through appliancectl is saved and is what the
        machine runs after a reboot (here: a sysctl, which applies at once)."""
        key, value = "net.core.somaxconn", "4321"
        cfg = self.vm.ssh("appliancectl config get").stdout
        if key in cfg:
            raise CheckFailed(f"{key} already in the config")
        new = cfg.rstrip() + "\n" if "[sysctl]" in cfg else cfg.rstrip() + "\n\n[sysctl]\n"
        new = new.replace("[sysctl]\n", f'[sysctl]\n"{key}" = {value}\n', 1)
        self.vm.ssh(f"cat > /tmp/new.toml <<'EOF'\n{new}EOF\nappliancectl config set /tmp/new.toml")
        if key not in self.vm.ssh("appliancectl config get --saved").stdout:
            self.vm.ssh("appliancectl config confirm")  # it was pending confirmation
        if key not in self.vm.ssh("appliancectl config get --saved").stdout:
            raise CheckFailed("the change is not in the saved config")
        if self.vm.ssh(f"sysctl -n {key}").stdout.strip() != value:
            raise CheckFailed(f"{key} not applied before the reboot")
        self.vm.reboot()
        got = self.vm.ssh(f"sysctl -n {key}").stdout.strip()
        if got != value:
            raise CheckFailed(f"after the reboot {key} = {got}, want {value}")
        if key not in self.vm.ssh("appliancectl config get").stdout:
            raise CheckFailed("the change is not in the running config after the reboot")
        return f"{key} = {value} after a reboot"


def playwright_modules():
    """target/browser-test/node_modules with playwright-core (the driver
    only, never a browser), installed on first use like the rig's browser
    test does, with the version it pins."""
    pin = next(line.split('"')[1] for line in (REPO / "webui/tests/browser.rs").read_text().splitlines()
               if line.startswith("const PLAYWRIGHT: &str"))
    prefix = REPO / "target/browser-test"
    modules = prefix / "node_modules"
    if not (modules / "playwright-core/package.json").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        p = run(["npm", "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix), pin],
                check=False, capture_output=True, env=dict(os.environ, PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD="1"))
        if p.returncode != 0:
            raise CheckFailed(f"npm install {pin} failed: {(p.stdout + p.stderr).strip()[-2000:]}")
    return modules


class WebApi:
    """The appliance's REST API through the forwarded port, as a browser
    uses it: a session cookie, and the CSRF token (and our Origin) on
    every change."""

    def __init__(self, port, cafile):
        self.base = f"https://localhost:{port}"
        context = ssl.create_default_context(cafile=str(cafile))
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context),
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.csrf = None

    def call(self, method, path, body=None):
        headers = {"Origin": self.base}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.csrf:
            headers["X-CSRF-Token"] = self.csrf
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(request, timeout=300) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as e:
            raise CheckFailed(f"{method} {path}: {e.code} {e.read().decode(errors='replace')}") from e
        except (urllib.error.URLError, OSError) as e:
            raise CheckFailed(f"{method} {path}: {e}") from e
        return json.loads(text) if text else None

    def login(self, username, password):
        self.csrf = None
        self.csrf = self.call("POST", "/api/v1/auth/login",
                              {"username": username, "password": password})["csrf_token"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", type=Path, default=REPO / "build/image/gazelle-appliance.raw")
    ap.add_argument("--key", type=Path, help="SSH private key for root (default: the build's throwaway key)")
    ap.add_argument("--run", action="store_true", help="boot and keep running until Ctrl-C (no checks)")
    ap.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto")
    ap.add_argument("--mem", type=int, default=4096, help="MiB (default 4096; the config reserves 2 GiB hugepages)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--boot-timeout", type=int, default=600)
    ap.add_argument("--keep-disk", action="store_true", help="on failure keep the VM's disk overlay too")
    ap.add_argument("--viommu", action="store_true", help="add an Intel vIOMMU (for vfio-pci in the guest)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("vm: run as root: the harness makes a network namespace and tap devices")
    image = args.image.resolve()
    if not image.is_file():
        sys.exit(f"vm: no image at {image}: build it with scripts/build-image.sh")
    key = args.key or image.parent / "ssh/id_ed25519"
    authorized = image.parent / "authorized_key.pub"
    if not args.key and authorized.exists() and Path(f"{key}.pub").exists() \
            and authorized.read_text().split()[:2] != Path(f"{key}.pub").read_text().split()[:2]:
        sys.exit("vm: the image was built with APPLIANCE_SSH_KEY; pass its private key with --key")
    if not key.exists():
        sys.exit(f"vm: no SSH key {key}")

    rundir = REPO / "build/vm" / time.strftime("%Y%m%d-%H%M%S")
    rundir.mkdir(parents=True, exist_ok=True)
    accel = args.accel
    if accel == "auto":
        t0 = time.monotonic()
        accel = "kvm" if kvm_works() else "tcg"
        log(f"accelerator: {accel} (KVM smoke test {time.monotonic() - t0:.1f} s)")

    net = vm = None
    ok = False
    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        net = HostNet(f"gzvm-{os.getpid()}")
        vm = VM(image, rundir, key, net, accel, args.mem, args.cpus, args.viommu)
        t_boot = time.monotonic()
        vm.start()
        log(f"booting {image.name} ({accel}, {args.cpus} vCPUs, {args.mem} MiB); serial log: {vm.serial}")
        state = vm.wait_ready(args.boot_timeout)
        boot_s = time.monotonic() - t_boot
        log(f"ready after {boot_s:.1f} s (systemd: {state})")

        if args.run:
            print(f"""
The appliance is running ({accel}). Reach it with:
  ssh -i {key} -p {vm.ssh_port} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1
  web API: https://localhost:{vm.web_port}/api/v1/ (first password:
    ssh ... cat /var/lib/gazelle/webui/initial-admin-password)
  the data network (clients, 192.168.100.1/24): ip netns exec {net.name} <command>
  serial console log: {vm.serial}   QEMU monitor: socat - UNIX-CONNECT:{vm.monitor}
Ctrl-C stops it and cleans up.""", flush=True)
            while vm.alive():
                time.sleep(1)
            ok = True
            return 0

        c = Checks(vm, net)
        c.run("system running, no failed units", c.system_running)
        c.run("kernel command line, root rw", c.kernel_cmdline)
        c.run("root file system grown to the disk", c.root_grown)
        c.run("root password locked, SSH key only", c.root_locked)
        c.run("management NIC has a DHCP address", c.management_nic)
        c.run("data NICs present, no kernel addresses", c.data_nics)
        c.run("hugepages reserved and mounted", c.hugepages)
        c.run("our binaries load, default config", c.our_binaries)
        daemon = "gazelle-appliance.service active"
        ltran = "ltran up (gazellectl ltran show)"
        redis = "redis-benchmark against redis on lstack"
        c.run(daemon, c.appliance_active, needs=["/usr/sbin/applianced"])
        c.run("data NICs bound to a DPDK driver", c.nics_bound, needs=["/usr/sbin/applianced"], after=[daemon])
        c.run(ltran, c.ltran_up, needs=["/usr/sbin/applianced", "/usr/sbin/ltran"], after=[daemon])
        c.run(redis, c.redis_on_lstack, needs=["/usr/sbin/applianced", "/usr/sbin/ltran"], after=[ltran])
        c.run("SSH and ping to the kernel's data address (ltran's kni)", c.ssh_on_data_address,
              needs=["/usr/sbin/applianced", "/usr/sbin/ltran"], after=[ltran])
        failover = "bond failover (set_link data0 off)"
        c.run(failover, c.bond_failover,
              needs=["/usr/sbin/applianced", "/usr/sbin/ltran"], after=[redis])
        c.run("ordered stop and start of the appliance", c.ordered_stop,
              needs=["/usr/sbin/applianced", "/usr/sbin/ltran"], after=[redis])
        web = "web API: log in, read the bond, change the config"
        c.run(web, c.web_api, needs=["/usr/bin/gazelle-webui"], after=[ltran])
        c.run("dashboard in Chromium through the forwarded port",
              lambda: c.browser_dashboard(c.passed(failover)),
              needs=["/usr/bin/gazelle-webui"], after=[web, redis])
        reboot = "config change survives a reboot"
        c.run(reboot, c.config_survives_reboot,
              needs=["/usr/sbin/applianced", "/usr/bin/appliancectl"], after=[daemon])
        c.run("web API change in force after the reboot", c.web_change_survived,
              needs=["/usr/bin/gazelle-webui"], after=[web, reboot])

        if c.failed():
            # What the guest logged, for the failures (the serial log has
            # only the console); every boot of this run, the last one first.
            journal = rundir / "journal.txt"
            try:
                text = vm.ssh("journalctl --no-pager -b 0; journalctl --no-pager -b -1 2>/dev/null || true",
                              check=False, timeout=120).stdout
                journal.write_text(text)
                log(f"guest journal saved: {journal}")
            except (subprocess.TimeoutExpired, CheckFailed) as e:
                log(f"could not save the guest journal: {e}")
        t_down = time.monotonic()
        vm.shutdown()
        log(f"powered off in {time.monotonic() - t_down:.1f} s")
        passed = sum(r[1] == "PASS" for r in c.results)
        failed = len(c.failed())
        skipped = sum(r[1] == "NOT RUN" for r in c.results)
        print("\nchecks:")
        for name, status, detail in c.results:
            print(f"  {status:8} {name}" + (f": {detail.splitlines()[0]}" if status != "PASS" and detail else ""))
        print(f"boot to ready: {boot_s:.1f} s ({accel})")
        print(f"vm: {passed} passed, {failed} failed, {skipped} skipped")
        ok = failed == 0
        return 0 if ok else 1
    except KeyboardInterrupt:
        log("interrupted")
        ok = args.run  # stopping a --run VM is how it ends
        return 0 if args.run else 128 + (stop["sig"] or signal.SIGINT)
    except CheckFailed as e:
        log(f"FAIL: {e}")
        return 1
    finally:
        if vm:
            vm.kill()
        if net:
            net.close()
        if ok:
            shutil.rmtree(rundir, ignore_errors=True)
        else:
            if vm and not args.keep_disk:
                vm.overlay.unlink(missing_ok=True)
            tail = vm.serial.read_text(errors="replace").splitlines()[-30:] if vm and vm.serial.exists() else []
            if tail:
                print("--- last lines of the serial console ---\n" + "\n".join(tail))
            print(f"vm: kept {rundir} (serial console: {rundir / 'serial.log'}, QEMU: {rundir / 'qemu.log'})")


if __name__ == "__main__":
    sys.exit(main())
