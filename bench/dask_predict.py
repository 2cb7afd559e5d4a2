"""The README's Dask recipe timed: LeNet's predict over N MNIST-shaped images through
dask.array.map_blocks on a LocalCluster of 1 worker process against 2 (1 thread
each, so 1 OpenMP thread per Dask thread), with predict in this process on 1 and
2 threads as the yardstick. Both clusters are started first (their start-up time is
printed, not counted); then the ways run interleaved, and the medians print.

    python bench/dask_predict.py [--images 20000] [--chunk 2500] [--rounds 5]

Each cluster runs the recipe twice: on the array of this process, as written
(each run sends the images, N x 3 KiB, to the workers), and on the same array
persisted on the workers beforehand (as if they had loaded the images
themselves): the first measures the recipe, the second the inference alone."""
import argparse
import os
import platform
import statistics
import time

import _path
_path.prefer_checkout()  # this checkout's in-place build first
import numpy as np

import fastcnn
from fastcnn import _native


def lenet():
    return fastcnn.Sequential(
        fastcnn.Conv2d(1, 6, 5, padding=2), fastcnn.ReLU(), fastcnn.MaxPool2d(2),
        fastcnn.Conv2d(6, 16, 5), fastcnn.ReLU(), fastcnn.MaxPool2d(2), fastcnn.Flatten(),
        fastcnn.Linear(400, 120), fastcnn.ReLU(), fastcnn.Linear(120, 10), seed=0)


def on_dask(client, model, xd):
    """The recipe's map_blocks over the dask array xd; the logits gathered here."""
    out = xd.map_blocks(model.predict, drop_axis=[2, 3], chunks=(xd.chunks[0], (10,)),
                        dtype=np.float32)
    return client.compute(out).result()


def in_process(model, x, threads):
    old = fastcnn.get_num_threads()
    fastcnn.set_num_threads(threads)
    try:
        return model.predict(x)
    finally:
        fastcnn.set_num_threads(old)


def start(workers):
    from dask.distributed import Client, LocalCluster
    t = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    print(f"cluster of {workers} worker(s) up in {time.perf_counter() - t:.1f} s; "
          f"kernel threads per worker: {sorted(client.run(fastcnn.get_num_threads).values())}")
    return cluster, client


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=2500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop("OMP_NUM_THREADS", None)     # the default: the nanny sets 1 per worker
    model = lenet()
    x = np.random.default_rng(0).standard_normal((args.images, 1, 28, 28)).astype(np.float32)
    expected = model.predict(x)
    import dask.array as da
    xd = da.from_array(x, chunks=(args.chunk,) + x.shape[1:])
    clusters = {n: start(n) for n in (1, 2)}
    # the images already on the workers (as if they had loaded them): persisted once
    on_workers = {n: client.persist(da.from_array(x, chunks=xd.chunks, name=f"on-{n}-workers"))
                  for n, (_, client) in clusters.items()}
    ways = {}
    for n, (_, client) in clusters.items():
        ways[f"dask, {n} worker(s) x 1 thread, images sent from here"] = \
            lambda client=client: on_dask(client, model, xd)
        ways[f"dask, {n} worker(s) x 1 thread, images on the workers"] = \
            lambda client=client, n=n: on_dask(client, model, on_workers[n])
    ways["in process, 1 thread"] = lambda: in_process(model, x, 1)
    ways["in process, 2 threads"] = lambda: in_process(model, x, 2)
    for run in ways.values():           # warm up; the results must all agree
        np.testing.assert_array_equal(run(), expected)
    times = {name: [] for name in ways}
    for _ in range(args.rounds):
        for name, run in ways.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
    for cluster, client in clusters.values():
        client.close()
        cluster.close()
    base = statistics.median(times["in process, 1 thread"])
    print(f"\nLeNet predict, {args.images} images of 1x28x28, chunks of {args.chunk}, "
          f"median of {args.rounds} interleaved rounds; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, fastcnn kernels {_native.isa()}")
    print("| way | median s | images/s | vs in process, 1 thread |\n|---|---|---|---|")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"| {name} | {m:.3f} | {args.images / m:,.0f} | {base / m:.2f}x |")
    for where in ("images sent from here", "images on the workers"):
        one, two = (times[f"dask, {n} worker(s) x 1 thread, {where}"] for n in (1, 2))
        ratios = [a / b for a, b in zip(one, two)]
        print(f"2 workers against 1, {where}: {statistics.median(ratios):.2f}x faster "
              f"(median of the per-round ratios {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
