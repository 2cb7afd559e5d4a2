"""Two-thread model runs against the distance between the two CPUs (issue 11).

On the shared 2-vCPU VMs the time a cache line takes to go from one vCPU to
the other and back changes by periods (the host places the two vCPUs near or
far apart), and fastcnn's 2-thread runs slow down in the far periods. This
script alternates, for SECONDS, samples of a frozen network at batch 1 on 2
threads (fastcnn and onnxruntime, the report's ResNet-18 b1 row) with a
ping-pong of one cache line between CPU 0 and CPU 1 (a small C program built
here with the system's cc), then prints the medians of each side's call time
for the samples with a near (< 150 ns round trip) and a far round trip.

    python bench/core_distance.py [SECONDS] [ROW]

ROW is a row name of compare.py (default "ResNet-18 b1 (fastcnn.models)").
Needs torch, onnxruntime and a C compiler; Linux (CPU affinity).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # as the report's children
import compare  # noqa: E402
import harness  # noqa: E402

PING_PONG = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#define ROUNDS 100000
static _Alignas(64) atomic_int line;
static void pin(int cpu)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    CPU_SET(cpu, &s);
    pthread_setaffinity_np(pthread_self(), sizeof s, &s);
}
static void *answer(void *arg)
{
    (void)arg;
    pin(1);
    for (int i = 0; i < ROUNDS; i++) {
        while (atomic_load(&line) != 1)
            ;
        atomic_store(&line, 0);
    }
    return NULL;
}
int main(void)
{
    pthread_t t;
    struct timespec a, b;
    pin(0);
    pthread_create(&t, NULL, answer, NULL);
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < ROUNDS; i++) {
        atomic_store(&line, 1);
        while (atomic_load(&line) != 0)
            ;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    pthread_join(t, NULL);
    printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / ROUNDS);
    return 0;
}
"""
NEAR_NS = 150.0


def build_ping_pong(folder):
    src, exe = os.path.join(folder, "ping_pong.c"), os.path.join(folder, "ping_pong")
    with open(src, "w") as f:
        f.write(PING_PONG)
    subprocess.run(["cc", "-O2", "-pthread", src, "-o", exe], check=True)
    return exe


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 60.0
    row = sys.argv[2] if len(sys.argv) > 2 else "ResNet-18 b1 (fastcnn.models)"
    case = next(c for c in compare.CASES if c.name == row)
    samples = []        # (round trip ns, fastcnn ms, peer ms)
    with tempfile.TemporaryDirectory() as tmp, harness.use_threads(2):
        ping_pong = build_ping_pong(tmp)
        pair = case.build(2)
        pair.check()
        end = time.time() + seconds
        while time.time() < end:
            ours = harness.median_ms(pair.fastcnn, 6, warmup=0)
            theirs = harness.median_ms(pair.peer, 6, warmup=0)
            ns = float(subprocess.run([ping_pong], capture_output=True, text=True).stdout)
            samples.append((ns, ours, theirs))
    print(f"{row}, 2 threads, {len(samples)} samples of 6 calls a side over {seconds:.0f} s")
    print("| CPU 0 <-> 1 round trip | samples | median ns | fastcnn ms | "
          f"{case.peer} ms | ratio |")
    print("|---|---|---|---|---|---|")
    for label, part in (("near (< 150 ns)", [s for s in samples if s[0] < NEAR_NS]),
                        ("far", [s for s in samples if s[0] >= NEAR_NS])):
        if not part:
            print(f"| {label} | 0 | | | | |")
            continue
        ns, ours, theirs = (statistics.median(v) for v in zip(*part))
        print(f"| {label} | {len(part)} | {ns:.0f} | {ours:.2f} | {theirs:.2f} | "
              f"{theirs / ours:.2f} |")


if __name__ == "__main__":
    main()
