"""EmoTorch's pipeline: one module per DVC stage (pure core functions and a short `main()`), plus the modules
they share (data access, inference, tracking, the Triton contract, the model repository on disk).

How a stage really runs: dvc.yaml's commands are `sh pipelines/stage.sh <module> ARGS...`, which runs
`python -m pipelines.<module> ARGS...` with the project's interpreter whether or not a virtualenv is active
(first of: $EMOTORCH_PYTHON, the active $VIRTUAL_ENV, the `.venv` at the DVC root, python3) and
PYTHONHASHSEED=0 (reproducible TorchScript bytes). DVC starts it in the project root, so `python -m` imports
the `pipelines` package of that checkout (a git worktree's own code, also when its `.venv` is shared). Run a
stage by hand the same way, e.g. `sh pipelines/stage.sh publish --model models/model.pt ...`.
"""
