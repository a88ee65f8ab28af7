"""The charon sessions of the PF_KEY corpus (../shared/pfkey-corpus/charon),
replayed by tests/integration/test_corpus.py's CorpusTest against whichever
ipsecd harness.binary names (an installed tree, an installed package)."""

import unittest

import harness
import test_corpus
from install_tree import PENDING_LIBEXEC, finds_children_in_libexec


def charon_cases():
    return [c for c in test_corpus.cases() if c[0].startswith("charon/")]


def charon_suite():
    cases = charon_cases()

    class CharonReplay(test_corpus.CorpusTest):
        def test_corpus_is_there(self):
            self.assertEqual(len(cases), 2, "charon-A-session and charon-B-session")

        def test_every_case_gets_the_replies_linux_gave(self):
            for name, base in cases:
                with self.subTest(case=name):
                    self.replay(name, base)

    return unittest.TestLoader().loadTestsFromTestCase(CharonReplay)


def run_charon_replay(test):
    """Runs the replay inside `test`; skips it with the replay's reason, fails with its failures."""
    import sys
    if not finds_children_in_libexec():
        test.skipTest(PENDING_LIBEXEC)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(charon_suite())
    # A skip in setUpClass skips the class without running (or counting) a test.
    if result.skipped and not (result.failures or result.errors) and result.testsRun <= len(result.skipped):
        test.skipTest(result.skipped[0][1])
    test.assertTrue(result.wasSuccessful(), "\n".join(f[1] for f in result.failures + result.errors))
    test.assertGreaterEqual(result.testsRun, 2)
