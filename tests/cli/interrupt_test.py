#!/usr/bin/env python3
"""SIGINT during `bitmix train` and SIGTERM during `bitmix search`: the run stops at the next step
with a complete checkpoint, exits 130 / 143 and prints the command that resumes it; running that
command finishes the run with exactly the checkpoint (every tensor, bit for bit), the log and the
search's artifacts of an uninterrupted run.

usage: interrupt_test.py BITMIX COMPARE_CHECKPOINTS WORK_DIR
"""
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

bitmix, compare, work = sys.argv[1], sys.argv[2], sys.argv[3]
shutil.rmtree(work, ignore_errors=True)
os.makedirs(work)
common = ["--data", "fashion-mnist", "--seed", "1", "--no-progress", "--threads", "1",
          "--train-subset", "256", "--test-subset", "64"]


def fail(message):
    print("FAIL: " + message, flush=True)
    sys.exit(1)


def run(args, what):
    start = time.monotonic()
    p = subprocess.run([bitmix] + args, capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{what}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return time.monotonic() - start


def interrupted(args, out, sig, full_seconds):
    """Starts bitmix, sends `sig` part-way through; returns its stderr. Retries with another delay
    when the signal came before the handlers were installed or after the run had finished."""
    fraction = 0.6
    for attempt in range(8):
        shutil.rmtree(out, ignore_errors=True)
        p = subprocess.Popen([bitmix] + args + ["--out", out], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
        time.sleep(full_seconds * fraction)
        p.send_signal(sig)
        stdout, stderr = p.communicate()
        if p.returncode == 128 + sig:
            print(f"{args[0]}: {signal.Signals(sig).name} after {full_seconds * fraction:.2f} s of a "
                  f"{full_seconds:.2f} s run: exit {p.returncode}", flush=True)
            return stderr
        if p.returncode == 0:
            fraction *= 0.7  # finished first: earlier
        elif p.returncode == -sig:
            fraction = min(0.95, fraction * 1.3)  # still loading the data (the default action): later
        else:
            fail(f"{args[0]} interrupted by {signal.Signals(sig).name}: exit {p.returncode}\n{stdout}\n{stderr}")
    fail(f"{args[0]}: no attempt was interrupted during training")


def resume_from(stderr, what):
    lines = stderr.splitlines()
    marker = "to continue exactly where it stopped:"
    if marker not in lines:
        fail(f"{what}: no resume command printed:\n{stderr}")
    words = shlex.split(lines[lines.index(marker) + 1])
    if words[0] != "bitmix" or "--resume" not in words:
        fail(f"{what}: unexpected resume command {words}")
    ckpt = words[words.index("--resume") + 1]
    if not os.path.isfile(ckpt):
        fail(f"{what}: the resume command names {ckpt}, which does not exist")
    print(f"{what}: resuming with: {' '.join(words)}", flush=True)
    run(words[1:], f"{what} (resumed)")


def same_checkpoints(a, b, what):
    p = subprocess.run([compare, a, b], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"{what}: {a} and {b} differ: {p.stdout}{p.stderr}")
    print(f"{what}: {p.stdout.strip()}", flush=True)


def same_files(a, b, what, drop_column=None):
    with open(a) as fa, open(b) as fb:
        la, lb = fa.read().splitlines(), fb.read().splitlines()
    if drop_column is not None:  # e.g. the seconds of log.csv
        la = [",".join(x.split(",")[:drop_column]) for x in la]
        lb = [",".join(x.split(",")[:drop_column]) for x in lb]
    if la != lb:
        fail(f"{what}: {a} and {b} differ")


# Training, SIGINT.
train = ["train"] + common + ["--model", "resnet20", "--width", "4", "--epochs", "3", "--batch", "32"]
seconds = run(train + ["--out", f"{work}/train_full"], "uninterrupted training")
err = interrupted(train, f"{work}/train_cut", signal.SIGINT, seconds)
if "interrupted by SIGINT" not in err:
    fail(f"train: the message does not name the signal:\n{err}")
resume_from(err, "train")
same_checkpoints(f"{work}/train_full/model.ckpt", f"{work}/train_cut/model.ckpt", "train")
same_files(f"{work}/train_full/log.csv", f"{work}/train_cut/log.csv", "train log.csv", drop_column=6)

# Search with sampling noise and held-out batches (both must continue exactly), SIGTERM.
search = ["search"] + common + ["--init", f"{work}/train_full/model.ckpt", "--budget-avg-bits", "3",
                                "--wbits", "2,3", "--abits", "2,3", "--epochs", "2", "--batch", "32",
                                "--lr", "0.01", "--gumbel", "--bilevel"]
seconds = run(search + ["--out", f"{work}/search_full"], "uninterrupted search")
err = interrupted(search, f"{work}/search_cut", signal.SIGTERM, seconds)
if "interrupted by SIGTERM" not in err:
    fail(f"search: the message does not name the signal:\n{err}")
resume_from(err, "search")
for name in ["model.ckpt", "supernet/model.ckpt"]:
    same_checkpoints(f"{work}/search_full/{name}", f"{work}/search_cut/{name}", f"search {name}")
same_files(f"{work}/search_full/bits.json", f"{work}/search_cut/bits.json", "search bits.json")
same_files(f"{work}/search_full/strengths.csv", f"{work}/search_cut/strengths.csv", "search strengths.csv")
print("interrupted runs resume exactly", flush=True)
