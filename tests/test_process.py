import subprocess
import sys

PROGRAM = """
import atexit, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from diffseg.process import exit_now

out = Path(sys.argv[1])
pool = ThreadPoolExecutor(1)  # a pool's worker is a non-daemon thread: it must finish its work, then stop
pool.submit(lambda: (time.sleep(0.3), (out / "pool").write_text("done")))
atexit.register(lambda: (out / "atexit").write_text("ran"))
print("unterminated line, still buffered", end="")
exit_now(3)
"""


def test_exit_now_runs_a_normal_exits_steps_and_keeps_the_code(tmp_path):
    """``exit_now`` skips only the interpreter's teardown: the pools finish their work, atexit handlers run, the
    buffered output reaches the pipe, and the exit code is the command's."""
    p = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 3, p.stderr
    assert p.stdout == "unterminated line, still buffered"
    assert (tmp_path / "pool").read_text() == "done" and (tmp_path / "atexit").read_text() == "ran"
