"""The manual pages (docs/man, mdoc) are lint-clean and say what the programs say.

mandoc -T lint and man -l (man-db with groff, what a user runs) must render every
page without a warning. Each page's options (its `Fl` macros) must be exactly
the options in the program's --help, and its commands or statements (`Cm`)
exactly those the --help lists; ipsecd.conf(5)'s keys must be exactly the keys
lib/config/config.cpp parses. A change to one without the other fails here.
"""

import os
import re
import shutil
import subprocess
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("IPSEC_BUILD_DIR", os.path.join(ROOT, "build"))
MAN = os.path.join(ROOT, "docs", "man")
PAGES = ["ipsecd.8", "ipsecd.conf.5", "setkey.8", "ipsecctl.8", "ipsec-pfkey-preload.8"]

# A word that is an mdoc macro (Ar, Op, Oc, Ns, ...), not a flag's name.
MACRO = re.compile(r"^[A-Z][a-z]{1,2}$")
# An option in --help text: a dash or two, then a letter, not inside a word.
HELP_OPTION = re.compile(r"(?<![\w\]/.-])(--?[A-Za-z][\w-]*)")


def page_text(page):
    with open(os.path.join(MAN, page)) as f:
        return f.read()


def section(text, name):
    """The lines of one `.Sh NAME` section of an mdoc page."""
    m = re.search(rf"^\.Sh {re.escape(name)}\n(.*?)(?=^\.Sh |\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def page_flags(text):
    """Every `Fl` argument of the page, with its dashes: `.Fl DP | F` → {-DP, -F}."""
    flags = set()
    for line in text.splitlines():
        if not line.startswith(".") or line.startswith(".\\\""):
            continue
        words = line[1:].split()
        for i, w in enumerate(words):
            if w != "Fl":
                continue
            for arg in words[i + 1:]:
                if MACRO.match(arg):
                    break
                if re.match(r"^-?[A-Za-z][\w-]*$", arg):
                    flags.add("-" + arg)
    return flags


def page_commands(text, sect):
    """The `.It Cm WORD` entries of one section."""
    return set(re.findall(r"^\.It Cm ([\w-]+)", section(text, sect), re.M))


def help_text(program):
    path = os.path.join(BUILD, "bin", program)
    r = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, f"{program} --help exited {r.returncode}: {r.stderr}"
    return r.stdout


def help_options(text):
    return set(HELP_OPTION.findall(text))


class Lint(unittest.TestCase):
    def test_mandoc_lint_is_clean(self):
        if not shutil.which("mandoc"):
            self.skipTest("mandoc is not installed (scripts/setup installs it)")
        for page in PAGES:
            r = subprocess.run(["mandoc", "-T", "lint", "-W", "warning", os.path.join(MAN, page)],
                               capture_output=True, text=True)
            self.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""), page)

    def test_man_renders_without_warnings(self):
        for page in PAGES:
            r = subprocess.run(["man", "--warnings", "-l", os.path.join(MAN, page)], capture_output=True,
                               text=True, env={**os.environ, "MANWIDTH": "80", "MANPAGER": "cat", "PAGER": "cat"})
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr, "", page)
            name = page.rsplit(".", 1)[0].upper()
            self.assertIn("NAME", r.stdout, page)
            self.assertGreater(len(r.stdout.splitlines()), 20, page)
            if page != "ipsec-pfkey-preload.8":
                self.assertIn(name, r.stdout, page)


class AgreesWithHelp(unittest.TestCase):
    def test_ipsecd_options(self):
        self.assertEqual(page_flags(page_text("ipsecd.8")), help_options(help_text("ipsecd")))

    def test_ipsecctl_options_and_commands(self):
        text = help_text("ipsecctl")
        page = page_text("ipsecctl.8")
        self.assertEqual(page_flags(page), help_options(text))
        commands = set(re.findall(r"^  ([a-z]+)\b", text.split("Commands:")[1].split("Options:")[0], re.M))
        self.assertEqual(page_commands(page, "COMMANDS"), commands)

    def test_setkey_options_and_statements(self):
        text = help_text("setkey")
        page = page_text("setkey.8")
        self.assertEqual(page_flags(page), help_options(text))
        statements = set(re.findall(r"^    ([a-z]+) ", text.split("\nSTATEMENTS\n")[1].split("\nALGORITHMS\n")[0], re.M))
        self.assertEqual(page_commands(page, "STATEMENTS"), statements)

    def test_config_keys_are_the_parsers(self):
        with open(os.path.join(ROOT, "lib", "config", "config.cpp")) as f:
            parsed = set(re.findall(r'\{"(\w+)", \[\]\(Config&', f.read()))
        self.assertGreater(len(parsed), 20)
        keys = set()
        for line in section(page_text("ipsecd.conf.5"), "KEYS").splitlines():
            if line.startswith(".It Cm "):
                keys.update(w for w in line.split()[1:] if w not in ("Cm", ","))
        self.assertEqual(keys, parsed)


if __name__ == "__main__":
    unittest.main()
