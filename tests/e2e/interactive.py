#!/usr/bin/env python3
"""Uses the console of the guest that scripts/guest-image.sh makes as a
person at a terminal would, through a pseudo-terminal (part of the
end-to-end tier, run by run.sh):

    interactive.py TRANSCRIPT COMMAND [ARGS...]

COMMAND is the microvm command line that guest-image.sh prints (or the
nested runner's). The pty is COMMAND's controlling terminal, in the usual
cooked mode. Waits for the image's shell prompt, types a command (which
writes /root/typed.txt), starts `sleep 1000` and interrupts it with Ctrl-C,
types `poweroff`, waits for COMMAND to exit and compares the terminal's
settings with those it started with. Prints one line per check for run.sh:

    INTERACTIVE <name>: ok|FAIL <detail>

and the whole console to TRANSCRIPT. Timeouts: E2E_INTERACTIVE_TIMEOUT
seconds (default 300) for the prompt, 60 s for each later step.
"""

import fcntl
import os
import select
import subprocess
import sys
import termios
import time

PROMPT = b"kindling:/# "


class Console:
    def __init__(self, master, transcript, proc):
        self.master = master
        self.proc = proc
        self.transcript = transcript
        self.seen = b""
        self.pos = 0

    def read_some(self, timeout):
        """Reads what is there; False once nothing more can come (this
        process holds the pty's other end too, so the command's exit
        shows as nothing ready while it is gone, not as an end of file)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return self.proc.poll() is None
        try:
            data = os.read(self.master, 4096)
        except OSError:
            return False
        if not data:
            return False
        self.seen += data
        self.transcript.write(data)
        self.transcript.flush()
        return True

    def expect(self, needle, timeout):
        """Waits for needle after the last match; returns seconds taken or None."""
        start = time.monotonic()
        while True:
            at = self.seen.find(needle, self.pos)
            if at >= 0:
                self.pos = at + len(needle)
                return time.monotonic() - start
            left = timeout - (time.monotonic() - start)
            if left <= 0 or not self.read_some(min(left, 0.5)):
                return None

    def send(self, data):
        os.write(self.master, data)


def report(name, ok, detail):
    print(f"INTERACTIVE {name}: {'ok' if ok else 'FAIL'} {detail}", flush=True)


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: interactive.py TRANSCRIPT COMMAND [ARGS...]")
    prompt_timeout = float(os.environ.get("E2E_INTERACTIVE_TIMEOUT", "300"))
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)

    def controlling_terminal():
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    with open(sys.argv[1], "wb") as transcript:
        proc = subprocess.Popen(
            sys.argv[2:],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            preexec_fn=controlling_terminal,
        )
        console = Console(master, transcript, proc)
        try:
            run(console, proc, prompt_timeout)
        finally:
            killed = proc.poll() is None
            if killed:
                proc.kill()
                proc.wait()
    if killed:
        report("terminal", False, "not checked: the command had to be killed")
        return
    after = termios.tcgetattr(slave)
    if after == before:
        report("terminal", True, "the terminal's settings are as before")
    else:
        names = ["iflag", "oflag", "cflag", "lflag", "ispeed", "ospeed", "cc"]
        diff = [n for n, a, b in zip(names, before, after) if a != b]
        report("terminal", False, f"the terminal's settings changed: {', '.join(diff)}")


def run(console, proc, prompt_timeout):
    took = console.expect(PROMPT, prompt_timeout)
    if took is None:
        if proc.poll() is not None:
            report("shell", False, f"the command exited (status {proc.returncode}) before the shell prompt")
        else:
            report("shell", False, f"no shell prompt within {prompt_timeout:.0f} s")
        return
    report("shell", True, f"the image's shell prompt {took:.1f} s after start")

    # The shell echoes what is typed; only the output holds "typed-42".
    console.send(b"echo typed-$((6*7)) > /root/typed.txt; cat /root/typed.txt\r")
    took = console.expect(b"typed-42", 60)
    if took is None:
        report("typed", False, "typed command's output 'typed-42' did not appear")
        return
    report("typed", True, "a typed command ran in the guest (it printed typed-42)")
    if console.expect(PROMPT, 60) is None:
        report("ctrl-c", False, "no prompt after the typed command")
        return

    console.send(b"sleep 1000\r")
    time.sleep(2)
    console.send(b"\x03")
    if console.expect(PROMPT, 60) is None:
        report("ctrl-c", False, "Ctrl-C did not interrupt 'sleep 1000' (no prompt)")
        return
    # The quotes keep the echoed command line from matching.
    console.send(b'echo ctrl-c-""status=$?\r')
    took = console.expect(b"ctrl-c-status=", 60)
    status = b""
    if took is not None:
        # The digits may arrive after the text before them (the serial
        # console flushes partial lines): read up to the end of the line.
        start = console.pos
        if console.expect(b"\n", 30) is not None:
            status = console.seen[start : console.pos].strip()
    if status != b"130":
        report("ctrl-c", False, f"'sleep 1000' ended with status {status!r}, expected 130 (SIGINT)")
        return
    report("ctrl-c", True, "Ctrl-C reached the guest and interrupted 'sleep 1000' (status 130)")
    console.expect(PROMPT, 60)

    console.send(b"poweroff\r")
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        console.read_some(0.5)
    if proc.poll() is None:
        report("poweroff", False, "still running 120 s after 'poweroff'")
        return
    # Whatever is still in the pty, for the transcript.
    drain_until = time.monotonic() + 1
    while time.monotonic() < drain_until and console.read_some(0.2):
        pass
    if proc.returncode == 0:
        report("poweroff", True, "'poweroff' ended the VM; the command exited 0")
    else:
        report("poweroff", False, f"the command exited {proc.returncode} after 'poweroff'")


if __name__ == "__main__":
    main()
