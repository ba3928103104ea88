"""Serving benchmark: the stack (gateway + Triton) against an in-process FastAPI baseline, in one run.

Same TorchScript model and the same face for every target, all on loopback:
  baseline             a plain FastAPI app (bench/baseline_app.py, 1 uvicorn worker) running model.pt itself;
                       the model-sized face PNG uploaded as multipart
  triton-http          Triton directly, HTTP/REST with the binary tensor extension (dynamic batching on)
  triton-grpc          Triton directly, gRPC (dynamic batching on)
  triton-grpc-nobatch  Triton directly, gRPC, the same model published without dynamic batching
  gateway-face         the gateway, POST /v1/emotions with the face PNG, mode=face, consent=true
  gateway-photo        the gateway, POST /v1/emotions with a 640x480 JPEG selfie (detection as EMOTORCH_DETECTOR
                       says, MTCNN by default; crop; Triton)
Triton runs the project's python backend and publish config (params.yaml) on a fresh repository. Each target is
driven by a closed-loop load generator on the same cores (cheap clients: aiohttp with bodies encoded once,
tritonclient's gRPC aio) at each concurrency for `--duration` seconds after a warm-up. Per cell: throughput,
p50/p99 latency, errors, CPU per request of the client and of each server process (from /proc), Triton's own
queue/compute counters and the gateway's stage timings (from their metrics endpoints), and the CPU other
processes took meanwhile (a disturbed cell is run again). The model's FLOPs are counted with FlopCounterMode
and its achieved FLOP/s at a large batch is set against the machine's measured dense fp32 FLOP/s (the faster
of an sgemm and a 3x3 convolution run as a GEMM). With `--py-spy`, an extra unmeasured run profiles the gateway
and a python-backend stub.

The modules: inputs (model and inputs), servers (launch), cpu (/proc accounting), counters (metric scraping),
load (load generation, cells, parity), profiling (py-spy), compute (FLOP/s), report (tables), cli (entry point).

    python -m bench.serving --model small|vgg_fer|mini_xception[,...] [--model-pt model.pt] [--duration 5]
                             [--concurrency 1,8,32]
                             [--json results.json] [--py-spy $(which py-spy)]
"""
