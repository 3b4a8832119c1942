"""The orchestration half: from a manifest to finished outputs, on workers, shards and
clusters. Layered bottom-up:

- ``options``: ``RunOptions``, every option of a run in one frozen record;
- ``ledger``: the state directory, its typed records (done records, report lines and their
  ``LineStatus``), summaries, kill counts, and ``StateDir.standing`` with its table
  ``STANDING_RULES`` — the only place that decides where a job stands (``JobState``);
- ``views``: every job of a manifest with where it stands, for ``status`` and ``report``;
- ``claims``, ``checkpoints``: one worker per job; interrupted jobs' state;
- ``memory``: what a job needs, before it starts;
- ``shards``: an array task's share of the manifest;
- ``plan``: read, validate, take the shard, decide what runs, group batches;
- ``single``, ``clip``: one still, one clip (its shots' claims: ``frames``; its cuts: ``cuts``;
  clips in one pass: ``lockstep``);
- ``executor``: one attempt path that runs 1..N stills or clips in one optimisation pass;
- ``pool``: worker processes (or this process) and their typed messages;
- ``run``: ``run_manifest(options)``;
- ``train``: a transform network trained from files (``train_network``), its model and card.

``options``, ``ledger``, ``views``, ``claims``, ``memory`` and ``plan`` never import torch.
"""
