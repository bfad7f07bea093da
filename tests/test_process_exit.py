"""How a process of a multi-process run ends (rlaif/common/dist.py: exit_process): its non-daemon threads joined,
its atexit handlers run and its output flushed, then ended without C++ static destructors. gloo's threads outlive
destroy_process_group (seen in a finished torchrun rank: gloo_tcp_loop, pt_gloo_runloop), and at interpreter exit
their teardown killed a finished rank with SIGABRT ("terminate called without an active exception") in 2 of 6
two-process runs under pytest: torchrun then reported the whole run failed."""
import subprocess
import sys
import textwrap


def run(world_size, tmp_path):
    script = textwrap.dedent(f"""
        import atexit, os, sys, threading, time
        from rlaif.common.dist import exit_process
        out = {str(tmp_path)!r}
        def late():
            time.sleep(0.3)
            open(os.path.join(out, "thread"), "w").write("done")
        threading.Thread(target=late).start()  # non-daemon: work a normal exit waits for
        atexit.register(lambda: open(os.path.join(out, "atexit"), "w").write("ran"))
        sys.stdout.write("unflushed")  # buffered: a pipe is not a terminal
        exit_process(3)
        open(os.path.join(out, "after"), "w").write("not reached")
    """)
    env = {"PATH": "/usr/bin:/bin", "WORLD_SIZE": str(world_size), "RANK": "1"}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)


def test_a_process_of_several_ends_with_its_code_after_its_threads_atexit_and_output(tmp_path):
    p = run(2, tmp_path)
    assert p.returncode == 3, p.stderr
    assert p.stdout == "unflushed"
    assert (tmp_path / "thread").read_text() == "done" and (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "after").exists()


def test_a_single_process_exits_as_python_does(tmp_path):
    p = run(1, tmp_path)
    assert p.returncode == 3, p.stderr
    assert p.stdout == "unflushed" and (tmp_path / "thread").exists() and (tmp_path / "atexit").exists()
