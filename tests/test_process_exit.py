"""How a process of a multi-process run ends (rlaif/common/dist.py: exit_process): its non-daemon threads joined,
its atexit handlers run and its output flushed, then ended without the interpreter's teardown and C++ static
destructors. gloo's threads outlive destroy_process_group (seen in a finished torchrun rank: gloo_tcp_loop,
pt_gloo_runloop), and at interpreter exit their teardown killed a finished rank with SIGABRT ("terminate called
without an active exception") in 2 of 6 two-process runs under pytest: torchrun then reported the whole run
failed. A teardown probe (an object whose finaliser runs only in the interpreter's teardown) tells the two exits
apart; a plain sys.exit passes every other assertion here."""
import signal
import subprocess
import sys
import textwrap
import time


def script(tmp_path, thread_s=0.3):
    return textwrap.dedent(f"""
        import atexit, os, signal, sys, threading, time
        from rlaif.common.dist import exit_process
        out = {str(tmp_path)!r}

        class TeardownProbe:  # module globals are finalised only in the interpreter's teardown
            def __del__(self, _open=os.open, _path=os.path.join(out, "teardown")):
                _open(_path, os.O_CREAT | os.O_WRONLY)
        probe = TeardownProbe()

        def late():
            time.sleep({thread_s})
            open(os.path.join(out, "thread"), "w").write("done")
        def interrupted(signum, frame):  # as rlaif's run_guarded turns SIGTERM into KeyboardInterrupt
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, interrupted)
        threading.Thread(target=late).start()  # non-daemon: work a normal exit waits for
        atexit.register(lambda: open(os.path.join(out, "atexit"), "w").write("ran"))
        sys.stdout.write("unflushed")  # buffered: a pipe is not a terminal
        open(os.path.join(out, "exiting"), "w").write("")
        exit_process(3)
        open(os.path.join(out, "after"), "w").write("not reached")
    """)


def start(world_size, tmp_path, thread_s=0.3):
    env = {"PATH": "/usr/bin:/bin", "WORLD_SIZE": str(world_size), "RANK": "1"}
    return subprocess.Popen([sys.executable, "-c", script(tmp_path, thread_s)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def test_a_process_of_several_ends_after_its_threads_atexit_and_output_without_teardown(tmp_path):
    p = start(2, tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    assert out == "unflushed"
    assert (tmp_path / "thread").read_text() == "done" and (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists() and not (tmp_path / "after").exists()


def test_a_single_process_exits_as_python_does(tmp_path):
    p = start(1, tmp_path)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3, err
    assert out == "unflushed" and (tmp_path / "thread").exists() and (tmp_path / "atexit").exists()
    assert (tmp_path / "teardown").exists()  # the probe does see a teardown


def test_a_signal_while_the_threads_are_joined_still_ends_with_the_code_and_no_traceback(tmp_path):
    """torchrun sends SIGTERM to the other ranks when one fails; a finished rank still joining a thread then."""
    p = start(2, tmp_path, thread_s=5)
    deadline = time.monotonic() + 30
    while not (tmp_path / "exiting").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)  # inside exit_process, joining the thread (a few bytecodes after the marker; the thread sleeps 5 s)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 3 and "Traceback" not in err, err
    assert (tmp_path / "atexit").exists() and not (tmp_path / "teardown").exists()
