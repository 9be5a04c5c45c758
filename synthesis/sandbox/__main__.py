"""python -m synthesis.sandbox run FILE.py [--timeout S] [--memory-mb M] [--max-processes N] [--files DIR]
                                 [--mode bwrap|unsafe_subprocess]
python -m synthesis.sandbox check

``run`` prints one JSON object: stdout, stderr, exit_code, timed_out, files (what the code
created or changed in its working folder, path -> base64 of the bytes), and also ok, reason,
stdout_truncated, stderr_truncated, mode and seconds. It exits 0 whenever the code ran, whatever
the code did; 2 when the sandbox cannot be made or the script or input folder cannot be read (the
message on stderr).
``check`` says whether this machine can make the sandbox.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from synthesis.sandbox import SandboxConfig, SandboxUnavailable, check_sandbox, run_python


def main(argv: list[str] | None = None) -> int:
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(prog="python -m synthesis.sandbox",
                                     description="Run Python code in the sandbox for model-written code.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run FILE.py and print the result as JSON")
    run.add_argument("file", type=Path, help="the Python script to run")
    run.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds (default %(default)s)")
    run.add_argument("--memory-mb", type=int, default=defaults.memory_mb,
                     help="address space per process, MiB (default %(default)s)")
    run.add_argument("--max-processes", type=int, default=defaults.max_processes,
                     help="processes + threads at once (default %(default)s)")
    run.add_argument("--files", type=Path, default=None, help="a folder whose files are copied into the working folder")
    run.add_argument("--mode", choices=["bwrap", "unsafe_subprocess"], default=defaults.mode,
                     help="unsafe_subprocess: no isolation, rlimits only (default %(default)s)")
    commands.add_parser("check", help="say whether bubblewrap can make the sandbox here")
    args = parser.parse_args(argv)

    try:
        if args.command == "check":
            print(f"sandbox available: {check_sandbox()}")
            return 0
        result = run_python(args.file.read_text(encoding="utf-8"), files=args.files, timeout_s=args.timeout,
                            memory_mb=args.memory_mb, max_processes=args.max_processes, mode=args.mode)
    except SandboxUnavailable as error:
        print(f"SandboxUnavailable: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:  # the script or the input folder cannot be used
        print(f"error: {error}", file=sys.stderr)
        return 2
    json.dump(result.to_json(), sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
