import pytest

from nstbatch.jobs.shards import WHOLE, Shard, detect_shard, parse_shard, resolve_shard, shard_of
from nstbatch.errors import UsageError

IDS = [f"job-{i}" for i in range(200)]


def scheduler_envs(n):
    """For an array of n tasks: each scheduler's variables as task k of n sees them."""
    for k in range(n):
        yield "SLURM", {"SLURM_ARRAY_TASK_ID": str(k + 1), "SLURM_ARRAY_TASK_MIN": "1",
                        "SLURM_ARRAY_TASK_MAX": str(n), "SLURM_ARRAY_TASK_COUNT": str(n)}, None
        yield "SLURM step 3", {"SLURM_ARRAY_TASK_ID": str(10 + 3 * k), "SLURM_ARRAY_TASK_MIN": "10",
                               "SLURM_ARRAY_TASK_MAX": str(10 + 3 * (n - 1)), "SLURM_ARRAY_TASK_STEP": "3",
                               "SLURM_ARRAY_TASK_COUNT": str(n)}, None
        yield "SGE", {"SGE_TASK_ID": str(1 + 2 * k), "SGE_TASK_FIRST": "1",
                      "SGE_TASK_LAST": str(1 + 2 * (n - 1)), "SGE_TASK_STEPSIZE": "2"}, None
        yield "LSF", {"LSB_JOBINDEX": str(k + 1), "LSB_JOBINDEX_END": str(n)}, None
        yield "PBS", {"PBS_ARRAY_INDEX": str(k + 1)}, n  # PBS -J 1-n: size from --shards
        yield "Torque", {"PBS_ARRAYID": str(k)}, n  # qsub -t 0-(n-1)
        yield "torchrun", {"RANK": str(k), "WORLD_SIZE": str(n)}, None
        yield "Kubernetes", {"JOB_COMPLETION_INDEX": str(k)}, n  # completions from --shards
        yield "AWS Batch", {"AWS_BATCH_JOB_ARRAY_INDEX": str(k), "AWS_BATCH_JOB_ARRAY_SIZE": str(n)}, None
        yield "AWS Batch, size from --shards", {"AWS_BATCH_JOB_ARRAY_INDEX": str(k)}, n
        yield "Google Cloud Batch", {"BATCH_TASK_INDEX": str(k), "BATCH_TASK_COUNT": str(n)}, None


@pytest.mark.parametrize("n", range(1, 8))
def test_every_scheduler_splits_the_manifest_with_no_gaps_or_overlaps(n):
    shards: dict[str, list[Shard]] = {}
    for name, env, size in scheduler_envs(n):
        shards.setdefault(name, []).append(detect_shard(env, size))
    assert len(shards) == 11
    for name, found in shards.items():
        assert all(s.count == n for s in found), name
        assert sorted(s.index for s in found) == list(range(n)), name  # one task per shard
        taken = [[i for i in IDS if shard_of(i, s.count) == s.index] for s in found]
        union = [i for part in taken for i in part]
        assert sorted(union) == sorted(IDS) and len(union) == len(set(union)), name


def test_shard_depends_on_the_id_alone_and_never_changes():
    # Pinned: a change of the hash would move jobs between the tasks of an array in flight.
    assert [shard_of(i, 5) for i in ("job-7", "a", "harbour-swirls", "town-blend")] == [1, 0, 2, 4]
    assert shard_of("job-7", 1000) == 806
    assert {shard_of(i, 5) for i in IDS} == set(range(5))


def test_explicit_shard_and_errors():
    assert parse_shard("2/8") == Shard(2, 8, "--shard")
    assert resolve_shard(None) is WHOLE and resolve_shard("all") is WHOLE
    assert resolve_shard("auto", env={}) is WHOLE
    for bad in ("8/8", "1", "a/b", "-1/3", "0/0"):
        with pytest.raises(UsageError):
            parse_shard(bad)
    with pytest.raises(UsageError, match="sparse"):
        detect_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
                      "SLURM_ARRAY_TASK_MAX": "8", "SLURM_ARRAY_TASK_COUNT": "3"})
    with pytest.raises(UsageError, match="--shards N"):
        detect_shard({"PBS_ARRAY_INDEX": "3"})
    with pytest.raises(UsageError, match="RANK=4"):
        detect_shard({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(UsageError, match="--shards N"):
        detect_shard({"JOB_COMPLETION_INDEX": "2"})
    with pytest.raises(UsageError, match="not below the array size 4"):
        detect_shard({"JOB_COMPLETION_INDEX": "4"}, 4)
    with pytest.raises(UsageError, match="--shards N"):
        detect_shard({"AWS_BATCH_JOB_ARRAY_INDEX": "0"})
    assert detect_shard({"BATCH_TASK_INDEX": "0", "BATCH_TASK_COUNT": "1"}).count == 1


def test_workers_use_the_cores_the_scheduler_allotted_not_the_whole_node():
    import os

    from nstbatch.environment import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus({}) == affinity
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert usable_cpus({"NSLOTS": str(affinity + 50)}) == affinity  # never more than the affinity
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "x"}) == affinity
