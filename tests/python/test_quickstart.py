#!/usr/bin/python3
"""The README's quick start (client/examples/quickstart.py) against a real daemon: the first run
saves the prompt's 4 blocks and leaves its session waiting on a tool call, which GetSession shows
with every block held in host memory; the second run ends the call and loads the blocks back
byte for byte. A daemon that is not there is exit code 3.
"""

import os
import subprocess
import sys
import unittest

try:
    import torch  # noqa: F401  (the example needs it)
except ImportError:
    print("SKIP: torch is not importable (Debian: apt-get install python3-torch)")
    sys.exit(0)

import cachesvc_sessions

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_sessions import TOKEN_A, start_module_daemon  # noqa: E402

EXAMPLE = os.path.join(os.environ.get("CACHESVC_SOURCE_DIR", "."), "client", "examples",
                       "quickstart.py")
DAEMON = None


def setUpModule():
    global DAEMON
    DAEMON = start_module_daemon("test_quickstart_")


def run(*args):
    return subprocess.run([sys.executable, EXAMPLE, *args], capture_output=True, text=True,
                          timeout=120)


class QuickstartTest(unittest.TestCase):
    def test_a_session_is_held_across_a_tool_call(self):
        first = run("--address", DAEMON.address, "--token", TOKEN_A, "--tool-seconds", "60")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("4 blocks saved, waiting on web_search", first.stdout)
        session_id = first.stdout.split()[1].rstrip(":")
        with cachesvc_sessions.Client(DAEMON.address, token=TOKEN_A) as agents:
            info = agents.session(session_id).info()
            self.assertEqual(info.state, cachesvc_sessions.SessionState.WAITING_TOOL)
            self.assertEqual(len(info.blocks), 4)
            for block in info.blocks:
                self.assertIn("host", block.tiers, block)

        second = run("--address", DAEMON.address, "--token", TOKEN_A, "--end")
        self.assertEqual(second.returncode, 0, second.stdout + second.stderr)
        self.assertIn("loaded 64 tokens back; bytes identical: True", second.stdout)

    def test_an_absent_daemon_is_exit_code_3(self):
        gone = run("--address", "127.0.0.1:1")
        self.assertEqual(gone.returncode, 3, gone.stdout + gone.stderr)


if __name__ == "__main__":
    unittest.main()
