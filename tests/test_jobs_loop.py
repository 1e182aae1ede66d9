"""The one worker loop: a queue others add to is waited on, a fixed plan ends the loop, a stop
ends it between jobs, and a failing take does not kill a queue's worker."""

import pytest

from vqclip.jobs.loop import work


def test_a_fixed_plan_ends_the_loop_when_it_is_empty():
    plan, done = [1, 2, 3], []
    work(
        lambda: plan.pop(0) if plan else None,
        lambda job: done.append(job) or True,
        stopping=lambda: False,
    )
    assert done == [1, 2, 3]


def test_a_queue_is_waited_on_until_jobs_come_and_a_stop_ends_it():
    arriving, done, waits = [None, None, "a", None, "b"], [], []

    def idle(seconds):
        waits.append(seconds)

    work(
        lambda: arriving.pop(0) if arriving else None,
        lambda job: done.append(job) or True,
        stopping=lambda: len(done) == 2,
        idle=idle,
        poll_s=0.25,
    )
    assert done == ["a", "b"] and waits == [0.25, 0.25, 0.25]


def test_a_stopped_job_ends_the_worker():
    plan, done = [1, 2, 3], []

    def carry_out(job):
        done.append(job)
        return job != 2  # job 2 was stopped: its checkpoint is written, the rest waits

    work(lambda: plan.pop(0) if plan else None, carry_out, stopping=lambda: False)
    assert done == [1, 2] and plan == [3]


def test_a_failing_take_is_retried_on_a_queue_and_raised_from_a_plan():
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("database is locked")
        return "job" if calls["n"] == 2 else None

    done = []
    work(
        flaky,
        lambda job: done.append(job) or True,
        stopping=lambda: bool(done),
        idle=lambda s: None,
    )
    assert done == ["job"]
    with pytest.raises(OSError):
        work(
            lambda: (_ for _ in ()).throw(OSError("gone")), lambda job: True, stopping=lambda: False
        )
