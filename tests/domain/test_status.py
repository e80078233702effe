"""The status rule on its own (domain.status): a monitor whose status is not known yet is
presumed UP, so its first confirmed failures are a change like any other; the contract
tests (tests/queue/test_contract.py) hold the Redis script to the same rule."""

from __future__ import annotations

from runstate.domain.status import (
    PRESUMED_STATUS,
    MonitorState,
    Observation,
    Status,
    Transition,
    apply_observation,
    rebuilt_state,
)

UP, DOWN = Status.UP, Status.DOWN
T = 1_700_000_000_000


def run(state: MonitorState, *seen: Observation) -> tuple[MonitorState, list[Transition]]:
    changes = []
    for observation in seen:
        state, transition = apply_observation(state, observation)
        if transition is not None:
            changes.append(transition)
    return state, changes


def test_an_unknown_monitor_is_presumed_up() -> None:
    assert PRESUMED_STATUS is UP


def test_a_first_up_sets_the_status_without_a_change_whatever_recovery_confirmations_say() -> None:
    state, changes = run(MonitorState(), Observation(UP, T + 1, recovery_confirmations=3))
    assert (state.status, changes) == (UP, [])


def test_a_first_down_with_one_confirmation_is_a_change_from_up() -> None:
    state, changes = run(MonitorState(), Observation(DOWN, T + 1))
    assert state.status is DOWN
    assert changes == [Transition(UP, DOWN, T + 1)]


def test_first_downs_change_only_once_confirmed_and_the_status_stays_unknown_until() -> None:
    seen = [Observation(DOWN, T + n, confirmations=3) for n in (1, 2, 3, 4)]
    state, changes = run(MonitorState(), *seen[:2])
    assert (state.status, state.consecutive_failures, changes) == (None, 2, [])
    state, changes = run(state, *seen[2:])
    assert state.status is DOWN
    assert changes == [Transition(UP, DOWN, T + 3)]


def test_an_up_among_unconfirmed_first_downs_sets_up_and_starts_the_count_again() -> None:
    state, changes = run(
        MonitorState(),
        Observation(DOWN, T + 1, confirmations=2),
        Observation(UP, T + 2, confirmations=2),
        Observation(DOWN, T + 3, confirmations=2),
    )
    assert (state.status, state.consecutive_failures, changes) == (UP, 1, [])


def test_a_stale_first_observation_is_ignored() -> None:
    state = MonitorState(last_applied_ms=T + 5)
    assert apply_observation(state, Observation(DOWN, T + 5)) == (state, None)


def test_a_rebuilt_status_without_the_time_of_its_change_is_unknown() -> None:
    assert rebuilt_state(MonitorState(DOWN, 1, 0, 0)) == MonitorState(None, 1, 0, 0)
    confirmed = MonitorState(DOWN, 0, 0, T)
    assert rebuilt_state(confirmed) is confirmed
    assert rebuilt_state(MonitorState()) == MonitorState()
