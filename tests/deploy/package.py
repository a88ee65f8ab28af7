"""The Debian package for the deployment tests: built once per build tree with
dpkg-buildpackage -us -uc -b from a copy of the checkout (its tracked and new
files, not its build trees) in <build>/deb, and reused while no source file
is newer than it. Then installed with dpkg into a scratch root: dpkg --root
with its maintainer scripts run chrootless (DPKG_ROOT), as dpkg does for a
system being bootstrapped, so the postinst's systemd-sysusers writes the
scratch root's /etc/passwd and nothing of this machine's.
"""

import glob
import os
import shutil
import subprocess
import tempfile

from install_tree import BUILD, ROOT

DEB_DIR = os.path.join(BUILD, "deb")
# The package build compiles the programs once (ccache keeps later builds short).
BUILD_TIMEOUT = 3600


def tools_missing():
    need = ["dpkg-buildpackage", "dh", "cmake", "ninja", "fakeroot", "systemd-sysusers"]
    return [t for t in need if not shutil.which(t)]


def source_files():
    r = subprocess.run(["git", "-C", ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True)
    return [f for f in r.stdout.decode().split("\0") if f and os.path.lexists(os.path.join(ROOT, f))]


def version():
    with open(os.path.join(ROOT, "debian", "changelog")) as f:
        return f.readline().split("(")[1].split(")")[0]


def built_debs():
    return sorted(glob.glob(os.path.join(DEB_DIR, f"ipsecd_{version()}_*.deb")))


def up_to_date(files):
    debs = built_debs()
    if not debs:
        return False
    built = os.path.getmtime(debs[0])
    return all(os.lstat(os.path.join(ROOT, f)).st_mtime <= built for f in files)


def build_package(log):
    """Returns (main .deb, dbgsym .deb or None); raises with the build's log on failure."""
    files = source_files()
    if up_to_date(files):
        log.write("package up to date\n")
    else:
        src = os.path.join(DEB_DIR, "ipsecd")
        shutil.rmtree(DEB_DIR, ignore_errors=True)
        os.makedirs(src)
        for f in files:
            dst = os.path.join(src, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, f), dst, follow_symlinks=False)
        env = {**os.environ, "DEB_BUILD_OPTIONS": "parallel=2", "CCACHE_BASEDIR": DEB_DIR,
               "CCACHE_DIR": os.environ.get("CCACHE_DIR", "/work/.ccache"), "CCACHE_NOHASHDIR": "1",
               "CMAKE_CXX_COMPILER_LAUNCHER": "ccache", "CMAKE_C_COMPILER_LAUNCHER": "ccache"}
        r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env, stdout=log,
                           stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT)
        if r.returncode != 0:
            raise RuntimeError(f"dpkg-buildpackage failed ({r.returncode}); see {log.name}")
    debs = built_debs()
    dbgsym = [d for d in glob.glob(os.path.join(DEB_DIR, f"ipsecd-dbgsym_{version()}_*.deb"))]
    return debs[0], (dbgsym[0] if dbgsym else None)


class ScratchRoot:
    """`with ScratchRoot(deb) as r:` a root with an empty dpkg database and the package installed."""

    def __init__(self, deb):
        self.deb = deb

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="ipsec-dpkg-root-")
        for d in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        open(os.path.join(self.root, "var/lib/dpkg/status"), "w").close()
        self.install = subprocess.run(
            ["dpkg", f"--root={self.root}", "--force-script-chrootless", "--force-depends", "--log=/dev/null",
             "-i", self.deb], capture_output=True, text=True, timeout=300)
        if self.install.returncode != 0:
            self.__exit__()
            raise RuntimeError(f"dpkg -i into {self.root} failed:\n{self.install.stdout}{self.install.stderr}")
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))
