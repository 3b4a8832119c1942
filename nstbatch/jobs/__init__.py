"""The orchestration half: from a manifest to finished outputs, on workers, shards and
clusters. Layered bottom-up:

- ``options``: ``RunOptions``, every option of a run in one frozen record;
- ``ledger``: the state directory, ``LineStatus``, its typed records (done records, report
  lines), summaries, kill counts, and ``StateDir.standing`` — the only place that decides
  where a job stands;
- ``views``: every job of a manifest with where it stands, for ``status`` and ``report``;
- ``claims``, ``checkpoints``: one worker per job; interrupted jobs' state;
- ``memory``: what a job needs, before it starts;
- ``plan``: read, validate, take the shard, decide what runs, group batches;
- ``executor``: one path that runs 1..N jobs in one optimisation pass;
- ``pool``: worker processes (or this process) and their typed messages;
- ``run``: ``run_manifest(options)``.

``options``, ``ledger``, ``views``, ``claims``, ``memory`` and ``plan`` never import torch.
"""
