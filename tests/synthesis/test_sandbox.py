"""The sandbox for model-written code, tried for real: every escape of issue 14 item 2 (a secret
file outside, a TCP listener on 127.0.0.1, writing outside, a fork bomb, a 2 GiB allocation, an
infinite loop, a child that outlives its parent), killing the caller, the caps, the refusal when
namespaces cannot be made, and a benign PIL rotate that works.

The fork bomb and the allocations are sized for a 2-core machine: the caps stop them within
seconds, and each such test then checks that a benign run works again. Processes the sandboxed
code starts carry a unique marker in their command line, so the tests can look for survivors
among the host's processes."""

from __future__ import annotations

import ast
import base64
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthesis.sandbox import SandboxResult, SandboxUnavailable, check_sandbox, run_python
from synthesis.sandbox.isolation import SANDBOX_UID, caller_session_niceness, python_roots

ROOT = Path(__file__).resolve().parents[2]


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line holds `marker` (zombies have none, so they do not count)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def spawn_marked(marker: str, body: str) -> str:
    """Sandbox code that re-executes itself as `python -c body marker`, so `body` and every
    process it forks carry the marker."""
    return f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {body!r}, {marker!r}])\n"


def assert_benign_run_works() -> None:
    result = run_python("print(sum(range(10)))", timeout_s=20)
    assert result.ok, result
    assert result.stdout == "45\n"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sandbox_is_available_here():
    assert check_sandbox().startswith("bubblewrap")


def test_benign_pil_rotate_returns_the_new_image_only():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
    code = textwrap.dedent("""
        from PIL import Image
        import numpy as np
        image = Image.open("image_0.png")
        rotated = image.rotate(90, expand=True)
        rotated.save("rotated.png")
        print(image.size, rotated.size, int(np.asarray(rotated).sum()))
    """)
    result = run_python(code, files={"image_0.png": png_bytes(image), "notes/readme.txt": b"left alone"})
    assert result.ok and result.reason == "", result
    assert isinstance(result, SandboxResult) and result.mode == "bwrap"
    expected = Image.fromarray(image).rotate(90, expand=True)
    assert result.stdout == f"(60, 40) (40, 60) {int(np.asarray(expected).sum())}\n"
    assert set(result.files) == {"rotated.png"}  # inputs it did not change are not returned
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(result.files["rotated.png"]))), np.asarray(expected))


def test_changed_inputs_and_new_folders_are_returned(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"a")
    (tmp_path / "b.txt").write_bytes(b"b")
    code = textwrap.dedent("""
        import os
        open("b.txt", "a").write("!")
        os.makedirs("out/deep")
        open("out/deep/c.bin", "wb").write(bytes(3))
    """)
    result = run_python(code, files=tmp_path)
    assert result.ok, result
    assert result.files == {"b.txt": b"b!", "out/deep/c.bin": bytes(3)}


def test_same_code_and_files_give_the_same_stdout():
    code = textwrap.dedent("""
        import os, socket, time, sys
        print(hash("keyeforge"), list({"a", "b", "c", "d"}), os.getpid(), socket.gethostname())
        print(time.tzname, os.getcwd(), os.environ.get("HOME"), sorted(os.listdir(".")), sys.flags.hash_randomization)
    """)
    first = run_python(code, files={"image_0.png": b"x"})
    second = run_python(code, files={"image_0.png": b"x"})
    assert first.ok, first
    assert first.stdout == second.stdout
    assert "sandbox" in first.stdout and "/sandbox" in first.stdout


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling in this kernel")
def test_the_sandbox_is_scheduled_like_its_callers_session():
    # bwrap's --new-session makes a new scheduling group (autogroup), at nice 0 unless told: a
    # caller whose session runs niced must not get a sandbox that is not. A child process puts
    # its own session at nice 5 and runs the sandbox from there.
    script = ("import os\nos.setsid()\nopen('/proc/self/autogroup', 'w').write('5')\n"
              "from synthesis.sandbox import run_python\n"
              "print(run_python(\"print(open('/proc/self/autogroup').read().split()[-1])\").stdout, end='')")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "5\n"
    # A process outside any session group (the root group, or a cgroup-scheduled container) reads
    # an empty file: the kernel prints nothing there, and the sandbox then keeps the default, 0.
    ours = Path("/proc/self/autogroup").read_text().split()
    assert caller_session_niceness() == (int(ours[-1]) if ours else 0)


def test_a_secret_file_outside_cannot_be_read(tmp_path, monkeypatch):
    token = uuid.uuid4().hex
    secret = tmp_path / "secret.txt"
    secret.write_text(token)
    monkeypatch.setenv("KEYEFORGE_SANDBOX_TEST_SECRET", token)  # nor anything of the caller's environment
    # Parents of the venv and the base interpreter are visible as folders on the way to them (the
    # checkout may be anywhere: /work/main here, /check/work/main on CI); list each of them.
    on_the_way = {str(parent): set() for root in python_roots() for parent in Path(root).parents}
    for root in python_roots():
        for parent in Path(root).parents:
            on_the_way[str(parent)].add((Path(root).relative_to(parent).parts or ("",))[0])
    listed = sorted(({"/work", "/root", "/home"} | set(on_the_way)) - {"/"})
    paths = [str(secret), f"/proc/1/root{secret}", "/etc/passwd", "/etc/shadow", str(ROOT / "README.md"),
             str(Path.home() / ".bash_history"), f"/proc/{os.getpid()}/environ"]
    code = textwrap.dedent(f"""
        import os
        for path in {paths!r}:
            try:
                print("OPENED", path, open(path).read()[:100])
            except OSError as error:
                print("blocked", path, type(error).__name__)
        print(sorted(os.listdir("/")))
        for folder in {listed + ["/tmp"]!r}:
            try:
                print(folder, sorted(os.listdir(folder)))
            except OSError as error:
                print("blocked", folder, type(error).__name__)
        for path in ["/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"]:
            try:
                print(path, open(path, "rb").read())
            except OSError as error:
                print("blocked", path, type(error).__name__)
    """)
    result = run_python(code)
    assert result.ok, result
    assert token not in result.stdout + result.stderr
    assert "OPENED" not in result.stdout
    assert result.stdout.count("blocked") >= len(paths)
    visible_top = ast.literal_eval(result.stdout.splitlines()[len(paths)])
    # Only the system folders, the Python installation's parents, /code, the working folder and
    # the fresh /tmp, /proc, /dev: no /home, no /mnt, no /var, no /opt.
    python_tops = {Path(root).parts[1] for root in python_roots()}
    assert set(visible_top) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr", "etc", "code", "sandbox",
                                "tmp", "proc", "dev"} | python_tops
    # Folders such as /work and /root exist only as parents of the venv and the base interpreter,
    # holding nothing but the next folder on the way there.
    for line in result.stdout.splitlines():
        folder, _, listing = line.partition(" ")
        if folder in listed and listing.startswith("["):
            assert set(ast.literal_eval(listing)) <= on_the_way.get(folder, set()), line
    assert "/tmp []" in result.stdout


def test_a_tcp_listener_on_host_loopback_cannot_be_reached():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    abstract_name = f"\0keyeforge-sandbox-test-{uuid.uuid4().hex}"
    unix_listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_listener.bind(abstract_name)
    unix_listener.listen(1)
    unix_listener.settimeout(0.2)
    code = textwrap.dedent(f"""
        import socket
        attempts = [("tcp 127.0.0.1", socket.AF_INET, ("127.0.0.1", {port})),
                    ("tcp ::1", socket.AF_INET6, ("::1", {port})),
                    ("tcp outside", socket.AF_INET, ("1.1.1.1", 53)),
                    ("abstract unix socket", socket.AF_UNIX, {abstract_name!r})]
        for name, family, address in attempts:
            try:
                with socket.socket(family, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(address)
                print("CONNECTED", name)
            except OSError as error:
                print("blocked", name, type(error).__name__)
        try:
            socket.getaddrinfo("pypi.org", 443)
            print("RESOLVED")
        except OSError as error:
            print("blocked dns", type(error).__name__)
        print("interfaces", [name for _, name in socket.if_nameindex()])
    """)
    try:
        result = run_python(code, timeout_s=20)
        accepted = []
        for server in (listener, unix_listener):
            try:
                accepted.append(server.accept())
            except TimeoutError:
                pass
    finally:
        listener.close()
        unix_listener.close()
    assert result.ok, result
    assert accepted == []
    assert "CONNECTED" not in result.stdout and "RESOLVED" not in result.stdout
    assert result.stdout.count("blocked") == 5, result.stdout
    assert "interfaces ['lo']" in result.stdout  # its own loopback only, no other network device


def test_writing_outside_the_working_folder_fails_or_stays_inside(tmp_path):
    tag = uuid.uuid4().hex
    venv_file = Path(sys.prefix) / f"evil-{tag}"
    targets = [str(tmp_path / "evil.txt"), f"/evil-{tag}", f"/usr/evil-{tag}", str(venv_file), "/code/main.py",
               f"/dev/evil-{tag}", f"/root/evil-{tag}", f"/work/evil-{tag}"]
    private = [f"/tmp/evil-{tag}", f"/dev/shm/evil-{tag}"]  # the sandbox's own tmpfs: allowed, gone after
    code = textwrap.dedent(f"""
        for path in {targets + private!r}:
            try:
                with open(path, "w") as handle:
                    handle.write("x")
                print("WROTE", path)
            except OSError as error:
                print("blocked", path, type(error).__name__)
    """)
    result = run_python(code)
    assert result.ok, result
    for path in targets:
        assert f"blocked {path} " in result.stdout, result.stdout
    for path in private:
        assert f"WROTE {path}" in result.stdout
        assert not Path(path).exists()
    assert list(tmp_path.iterdir()) == []
    assert not venv_file.exists()
    assert result.files == {}


def test_a_fork_bomb_is_held_to_the_process_cap_and_the_machine_recovers():
    marker = f"sandbox-fork-bomb-{uuid.uuid4().hex}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    max_processes = 24
    peak = 0
    sampling = threading.Event()

    def sample_host_processes():
        nonlocal peak
        while not sampling.is_set():
            peak = max(peak, len(processes_with(marker)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample_host_processes)
    sampler.start()
    started = time.monotonic()
    try:
        result = run_python(spawn_marked(marker, bomb), timeout_s=3, max_processes=max_processes)
    finally:
        sampling.set()
        sampler.join()
    elapsed = time.monotonic() - started
    assert result.timed_out and result.reason == "timeout" and not result.ok
    assert elapsed < 15
    assert 1 < peak <= max_processes  # seen from the host: the bomb never had more processes
    assert processes_with(marker) == []
    assert_benign_run_works()


def test_the_process_cap_counts_this_sandbox_only():
    code = textwrap.dedent("""
        import os, time
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    time.sleep(10)
                    os._exit(0)
                children += 1
        except OSError as error:
            print(children, error.errno)
    """)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run_python(code, max_processes=12, timeout_s=20), range(2)))
    for result in results:
        assert result.ok, result
        children, errno = map(int, result.stdout.split())
        assert errno == 11  # EAGAIN: the cap, not something else
        assert 9 <= children <= 11  # the cap less the main process (and bwrap's init where it counts)


def test_a_2_gib_allocation_fails_fast_and_the_machine_recovers():
    started = time.monotonic()
    result = run_python("data = bytearray(2 << 30)\nprint('ALLOCATED')", memory_mb=1024, timeout_s=20)
    assert time.monotonic() - started < 10
    assert not result.ok and result.reason == "memory" and result.exit_code == 1
    assert "ALLOCATED" not in result.stdout and "MemoryError" in result.stderr

    result = run_python("import numpy as np\nx = np.ones((2 << 30) // 8)\nx[:] = 2\nprint(x.sum())", timeout_s=20)
    assert result.reason == "memory", result
    assert_benign_run_works()


def test_an_infinite_loop_is_killed_at_the_timeout_with_its_children():
    marker = f"sandbox-loop-{uuid.uuid4().hex}"
    body = textwrap.dedent("""
        import os
        for _ in range(3):
            if os.fork() == 0:
                break
        print("looping", flush=True)
        while True:
            pass
    """)
    started = time.monotonic()
    result = run_python(spawn_marked(marker, body), timeout_s=2)
    elapsed = time.monotonic() - started
    assert result.timed_out and result.reason == "timeout" and result.exit_code == 128 + signal.SIGKILL
    assert 2 <= elapsed < 10
    assert result.stdout.count("looping") == 4  # what it printed before the kill is kept
    assert processes_with(marker) == []


def test_a_child_that_outlives_its_parent_is_killed_with_it():
    marker = f"sandbox-orphan-{uuid.uuid4().hex}"
    code = textwrap.dedent(f"""
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:  # a daemon: new session, parent gone, stdout still open
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(60)", {marker!r}])
            os._exit(0)
        os.wait()
        print("parent exits")
    """)
    started = time.monotonic()
    result = run_python(code, timeout_s=30)
    assert result.ok and result.stdout == "parent exits\n", result
    assert time.monotonic() - started < 10  # not held until the daemon ends or the timeout
    assert processes_with(marker) == []


def test_killing_the_caller_kills_the_sandbox():
    marker = f"sandbox-caller-killed-{uuid.uuid4().hex}"
    code = spawn_marked(marker, "import time\ntime.sleep(60)")
    caller = subprocess.Popen([sys.executable, "-c",
                               f"from synthesis.sandbox import run_python\nrun_python({code!r}, timeout_s=60)"],
                              cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not processes_with(marker):
            assert time.monotonic() < deadline, "the sandboxed code never started"
            assert caller.poll() is None, "the caller ended early"
            time.sleep(0.05)
        caller.send_signal(signal.SIGKILL)
        caller.wait()
        deadline = time.monotonic() + 10
        while processes_with(marker):
            assert time.monotonic() < deadline, "the sandbox outlived its caller"
            time.sleep(0.05)
    finally:
        if caller.poll() is None:
            caller.kill()
            caller.wait()


def test_output_is_capped_and_the_cap_recorded():
    result = run_python("import sys\nsys.stdout.write('x' * (3 << 20))\nsys.stderr.write('e' * 100)",
                        max_output_bytes=1 << 20)
    assert result.ok, result.reason
    assert result.stdout == "x" * (1 << 20) and result.stdout_truncated
    assert result.stderr == "e" * 100 and not result.stderr_truncated


def test_the_working_folder_is_capped():
    one_big_file = run_python("open('big.bin', 'wb').write(bytes(20 << 20))", max_disk_mb=8)
    assert one_big_file.reason == "disk" and "File too large" in one_big_file.stderr
    assert len(one_big_file.files["big.bin"]) == 8 << 20  # written up to the cap, not a byte more

    started = time.monotonic()
    many_files = run_python("import time\nfor i in range(20):\n    open(f'part{i}.bin', 'wb').write(bytes(1 << 20))\n"
                            "time.sleep(30)", max_disk_mb=8, timeout_s=30)
    assert many_files.reason == "disk" and not many_files.timed_out
    assert time.monotonic() - started < 10
    assert many_files.files == {}
    assert_benign_run_works()


def test_symlinks_the_code_leaves_are_not_followed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    code = textwrap.dedent(f"""
        import os
        os.symlink({str(secret)!r}, "link.txt")
        os.symlink("/etc", "etc_link")
        open("real.txt", "w").write("ok")
    """)
    result = run_python(code)
    assert result.ok, result
    assert result.files == {"real.txt": b"ok"}


def test_runs_from_several_threads_stay_apart():
    def run(index: int) -> SandboxResult:
        code = "import os\nprint(open('in.txt').read(), sorted(os.listdir('.')))\nopen('out.txt', 'w').write('done')"
        return run_python(code, files={"in.txt": str(index).encode()}, timeout_s=30)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(run, range(8)))
    for index, result in enumerate(results):
        assert result.ok, result
        assert result.stdout == f"{index} ['in.txt']\n"
        assert result.files == {"out.txt": b"done"}


def test_input_names_that_leave_the_working_folder_are_refused():
    for name in ("../escape.txt", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError, match="relative paths"):
            run_python("pass", files={name: b"x"})


def test_without_bubblewrap_it_refuses_naming_the_unsafe_setting(tmp_path):
    # A fresh process whose PATH has no bwrap: the check fails with an error, never a silent run.
    script = "from synthesis.sandbox import run_python\nrun_python('print(1)')"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PATH": str(tmp_path)}, timeout=60, check=False)
    assert done.returncode != 0
    assert "SandboxUnavailable" in done.stderr and "bubblewrap (bwrap) is not installed" in done.stderr
    assert "sandbox.mode=unsafe_subprocess" in done.stderr


def test_where_namespaces_cannot_be_made_it_refuses():
    # The caller itself runs in a user namespace that allows no further ones (as in a container
    # whose seccomp profile forbids them): bwrap cannot make the sandbox and the CLI says so.
    outer = ["bwrap", "--unshare-user", "--disable-userns", "--bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if os.geteuid() == 0:
        outer += ["--cap-add", "CAP_SYS_RESOURCE"]  # root sets the namespace limit through this capability
    done = subprocess.run(outer + ["--", sys.executable, "-m", "synthesis.sandbox", "check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done
    assert "bubblewrap cannot make the sandbox on this machine" in done.stderr
    assert "sandbox.mode=unsafe_subprocess" in done.stderr


def test_unsafe_mode_runs_without_isolation_and_says_so(caplog, tmp_path):
    from synthesis import sandbox

    sandbox._unsafe_warned = False
    readable = tmp_path / "host.txt"
    readable.write_text("visible")
    with caplog.at_level(logging.WARNING, logger="synthesis.sandbox"):
        result = run_python(f"print(open({str(readable)!r}).read())\nopen('out.txt', 'w').write('x')",
                            mode="unsafe_subprocess")
    assert result.ok and result.mode == "unsafe_subprocess", result
    assert result.stdout == "visible\n" and result.files == {"out.txt": b"x"}
    assert "WITHOUT isolation" in caplog.text

    started = time.monotonic()
    looping = run_python("while True:\n    pass", mode="unsafe_subprocess", timeout_s=1)
    assert looping.timed_out and time.monotonic() - started < 8
    memory = run_python("bytearray(2 << 30)", mode="unsafe_subprocess", memory_mb=512)
    assert memory.reason == "memory"


def test_cli_run_prints_one_json_object(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "image_0.png").write_bytes(png_bytes(np.zeros((4, 6, 3), dtype=np.uint8)))
    script = tmp_path / "rotate.py"
    script.write_text("from PIL import Image\nim = Image.open('image_0.png')\n"
                      "im.rotate(90, expand=True).save('out.png')\nprint(im.size)\n")
    done = subprocess.run([sys.executable, "-m", "synthesis.sandbox", "run", str(script), "--files", str(inputs),
                           "--timeout", "20", "--memory-mb", "1024"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert {"stdout", "stderr", "exit_code", "timed_out", "files"} <= set(result)
    assert result["stdout"] == "(6, 4)\n" and result["exit_code"] == 0 and result["timed_out"] is False
    out = Image.open(io.BytesIO(base64.b64decode(result["files"]["out.png"])))
    assert out.size == (4, 6) and set(result["files"]) == {"out.png"}


@pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="needs root (to become another user) and a system Python")
def test_an_ordinary_user_gets_the_same_sandbox():
    # Run by a non-root user, bwrap maps the sandbox's uid to that user itself: the process cap,
    # the network and the filesystem must hold the same. The system Python runs it (the venv's
    # base interpreter may sit where other users cannot read).
    for parent in [ROOT, *ROOT.parents]:
        if not os.stat(parent).st_mode & 0o001:
            pytest.skip(f"{parent} cannot be crossed by other users")
    code = textwrap.dedent("""
        import os, socket
        print(os.getuid(), sorted(os.listdir("/")))
        try:
            socket.create_connection(("127.0.0.1", 22), timeout=2)
        except OSError as error:
            print("blocked", type(error).__name__)
        children = 0
        try:
            while True:
                if os.fork() == 0:
                    import time
                    time.sleep(10)
                    os._exit(0)
                children += 1
        except OSError as error:
            print(children, error.errno)
    """)
    script = f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom synthesis.sandbox import run_python\n" \
             f"r = run_python({code!r}, max_processes=12, timeout_s=30)\nprint(r.ok, r.mode)\nprint(r.stdout, end='')"
    done = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True, timeout=120, cwd="/",
                          check=False, user=SANDBOX_UID, group=SANDBOX_UID, extra_groups=[],
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "True bwrap"
    assert lines[1].startswith(f"{SANDBOX_UID} ")
    assert lines[2].startswith("blocked")
    children, errno = map(int, lines[3].split())
    assert errno == 11 and 9 <= children <= 11


def test_sandbox_unavailable_is_an_error_type():
    assert issubclass(SandboxUnavailable, RuntimeError)
