"""tfmeta.runtime's thread plan: whole tasks side by side on the cores, ops narrowed to
their share; fixed budgets respected; one task per step keeps every core per op."""

import pytest

from tfmeta import config as cfg
from tfmeta.runtime import TaskThreads, task_threads, task_threads_for


@pytest.mark.parametrize("args,expected", [
    # (parallel_tasks, tasks_per_step, threads, cores) -> plan
    ((0, 32, 0, 2), TaskThreads(2, 1, 0)),     # auto: one task per core, 1 thread per op
    ((0, 1, 0, 2), TaskThreads(1, 0, 0)),      # one task: TF's default threads per op
    ((0, 4, 0, 16), TaskThreads(4, 4, 0)),     # 16 cores, 4 tasks: 4 threads per op
    ((4, 32, 0, 2), TaskThreads(4, 1, 0)),     # explicit overlap beyond the cores
    ((1, 32, 0, 2), TaskThreads(1, 0, 0)),     # tasks one after another
    ((0, 8, 1, 2), TaskThreads(1, 1, 1)),      # a 1-thread budget: sharing the machine
    ((0, 8, 2, 16), TaskThreads(2, 2, 2)),     # a fixed budget wins over the cores
])
def test_task_threads_plans(args, expected):
    assert task_threads(*args[:3], cores=args[3]) == expected


def test_task_threads_of_a_config_and_bad_values():
    config = cfg.FewShotConfig(task=cfg.TaskConfig(meta_batch_size=1))
    assert task_threads_for(config).parallel_tasks == 1
    with pytest.raises(ValueError):
        task_threads(-1, 4)
    with pytest.raises(Exception, match="parallel_tasks"):
        cfg.TrainConfig(parallel_tasks=-1).validate()
