"""An installed copy of the build for the deployment tests: `cmake --install`
into a scratch root (DESTDIR) with the prefix the build was configured for,
and where each piece landed.

The build tree's cache says which directories GNUInstallDirs chose (prefix
/usr/local keeps etc and lib under the prefix; prefix /usr gives /etc and the
multiarch lib directory, as the Debian package has). The units and drop-ins
name the paths of that configuration.
"""

import os
import re
import shutil
import subprocess
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("IPSEC_BUILD_DIR", os.path.join(ROOT, "build"))
CHILDREN = ("ipsec-keydb", "ipsec-policy", "ipsec-crypto", "ipsec-forwarder")


def cache_value(name):
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        m = re.search(rf"^{name}:\w+=(.*)$", f.read(), re.M)
    if not m:
        raise KeyError(f"{name} is not in {BUILD}/CMakeCache.txt")
    return m.group(1)


def under_prefix(path):
    """A GNUInstallDirs directory as an absolute path under the configured prefix."""
    return path if path.startswith("/") else os.path.join(cache_value("CMAKE_INSTALL_PREFIX"), path)


PENDING_LIBEXEC = ("the installed ipsecd does not look for its children in libexec/ipsecd (it looks "
                   "beside itself, in sbin): issue 14 §1, pending in services/ipsecd")


def finds_children_in_libexec():
    """Whether ipsecd, as built from this tree, looks in libexec/ipsecd for its children.

    Judged from its source, which must name that directory to look there (the
    installed programs and the package are built from this tree; an optimised
    binary need not keep the short literal, and a run of an ipsecd that looks
    elsewhere only fails closed after its children's start-up timeout)."""
    sources = os.path.join(ROOT, "services", "ipsecd")
    for name in os.listdir(sources):
        with open(os.path.join(sources, name), errors="replace") as f:
            if "libexec" in f.read():
                return True
    return False


def full_sysconfdir():
    """GNUInstallDirs' CMAKE_INSTALL_FULL_SYSCONFDIR, fixed when the build was configured."""
    etc = cache_value("CMAKE_INSTALL_SYSCONFDIR")
    prefix = cache_value("CMAKE_INSTALL_PREFIX")
    if etc.startswith("/"):
        return etc
    return "/etc" if prefix.rstrip("/") == "/usr" else os.path.join(prefix, etc)


class InstallTree:
    """`with InstallTree() as t:` installs, and removes the scratch root after."""

    def __enter__(self):
        self.root = tempfile.mkdtemp(prefix="ipsec-install-")
        env = {**os.environ, "DESTDIR": self.root}
        r = subprocess.run(["cmake", "--install", BUILD], env=env,
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            self.__exit__()
            raise RuntimeError(f"cmake --install failed:\n{r.stdout}{r.stderr}")
        self.sbin = self.path(under_prefix(cache_value("CMAKE_INSTALL_SBINDIR")))
        self.libexec = self.path(under_prefix(cache_value("CMAKE_INSTALL_LIBEXECDIR")), "ipsecd")
        self.libdir = self.path(under_prefix(cache_value("CMAKE_INSTALL_LIBDIR")))
        self.etc = self.path(full_sysconfdir(), "ipsecd")
        # GNUInstallDirs caches MANDIR empty and derives it from DATAROOTDIR.
        share = under_prefix(cache_value("CMAKE_INSTALL_DATAROOTDIR") or "share")
        self.mandir = self.path(under_prefix(cache_value("CMAKE_INSTALL_MANDIR") or os.path.join(share, "man")))
        self.docdir = self.path(share, "doc", "ipsecd")
        self.unitdir = self.path(under_prefix(cache_value("IPSEC_SYSTEMD_UNIT_DIR")))
        self.sysusersdir = self.path(under_prefix(cache_value("IPSEC_SYSUSERS_DIR")))
        return self

    def __exit__(self, *exc):
        shutil.rmtree(self.root, ignore_errors=True)

    def path(self, *parts):
        return os.path.join(self.root, *(p.lstrip("/") for p in parts))

    def files(self):
        """Every file installed, as absolute paths on the target system."""
        found = set()
        for dirpath, _, names in os.walk(self.root):
            for n in names:
                found.add("/" + os.path.relpath(os.path.join(dirpath, n), self.root))
        return found
