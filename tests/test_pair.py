"""The pair's decisions (broker/pairstate.py), driven by heartbeats and votes alone:
who is active, when a standby takes over, and when an active broker must stop;
and the answers a broker of a pair keeps for clients that ask again (answers.py)."""
import time


from mesh.broker.pairstate import EXPIRY, Pair, Role


def pair(ctx, primary, closed_port="tcp://127.0.0.1:9"):
    return Pair(ctx, closed_port, primary, None, "tcp://127.0.0.1:5555")  # its heartbeats go nowhere


def beat(role, epoch=0, primary=False, holds=False):
    return {"role": role.value, "epoch": epoch, "primary": primary, "holds": holds, "incarnation": "x"}


def silent(p):
    """The peer was last heard long ago."""
    p.link.heard = time.monotonic() - 10 * EXPIRY


def test_a_fresh_pair_makes_the_primary_active_and_the_backup_its_standby(ctx):
    a, b = pair(ctx, primary=True), pair(ctx, primary=False)
    assert a.heard(beat(Role.STARTING)) == "activate" and (a.role, a.epoch) == (Role.ACTIVE, 1)
    assert b.heard(beat(Role.ACTIVE, 1, primary=True)) is None and (b.role, b.epoch) == (Role.STANDBY, 1)


def test_alone_at_start_the_primary_serves_and_the_backup_waits(ctx):
    a, b = pair(ctx, primary=True), pair(ctx, primary=False)
    for p in (a, b):
        p.started -= 2 * EXPIRY
    assert a.tick() == "activate" and a.active
    assert b.tick() is None and b.role is Role.STANDBY and not b.active


def test_a_standby_that_cannot_see_its_peer_does_not_take_over_without_a_vote(ctx):
    b = pair(ctx, primary=False)
    b.heard(beat(Role.ACTIVE, 1, primary=True))
    silent(b)
    for _ in range(3):
        assert b.tick() is None
    assert b.role is Role.STANDBY  # silence alone is not enough (the link may be what failed)
    assert b.vote() == "activate"  # a worker or client lost the active one: the standby serves (empty:
    assert (b.role, b.epoch, b.failovers) == (Role.ACTIVE, 2, 0)  # it was never sent the state)


def test_a_vote_while_the_peer_looks_alive_counts_once_it_is_silent_but_not_for_long(ctx):
    b = pair(ctx, primary=False)
    b.heard(beat(Role.ACTIVE, 1, primary=True))
    assert b.vote() is None and b.role is Role.STANDBY  # the peer is alive: the standby stays one
    assert b.tick() is None and b.role is Role.STANDBY
    silent(b)  # ...until the peer goes silent: the vote stands (a client or worker lost it first)
    assert b.tick() == "activate" and b.role is Role.ACTIVE
    c = pair(ctx, primary=False)
    c.heard(beat(Role.ACTIVE, 1, primary=True))
    c.vote()
    c.voted -= 3 * EXPIRY  # an old vote: the peer was fine then
    silent(c)
    assert c.tick() is None and c.role is Role.STANDBY


def test_a_standby_holding_the_state_takes_over_at_a_vote(ctx):
    b = pair(ctx, primary=False)
    b.heard(beat(Role.ACTIVE, 1, primary=True))
    b.holds = True
    silent(b)
    assert b.vote() == "take over" and (b.epoch, b.failovers) == (2, 1)


def test_an_active_broker_fences_itself_when_it_hears_a_higher_epoch(ctx):
    a = pair(ctx, primary=True)
    a.heard(beat(Role.STARTING))
    assert a.heard(beat(Role.ACTIVE, 2)) == "fence"
    assert a.role is Role.FENCED and a.fenced_by == 2 and not a.active


def test_an_older_active_peer_is_ignored(ctx):
    b = pair(ctx, primary=False)
    b.heard(beat(Role.ACTIVE, 1, primary=True))
    b.holds = True
    silent(b)
    b.vote()
    assert b.heard(beat(Role.ACTIVE, 1, primary=True)) is None and b.role is Role.ACTIVE  # it will fence itself


def test_a_broker_frozen_past_the_expiry_doubts_until_it_hears_its_peer(ctx):
    a = pair(ctx, primary=True)
    a.heard(beat(Role.STARTING))
    a.froze(2 * EXPIRY)
    assert a.doubting and not a.active and not a.shipping()
    assert a.heard(beat(Role.STANDBY, 1, holds=True)) is None  # sent during the freeze: old news
    assert a.doubting
    assert a.heard(dict(beat(Role.STANDBY, 1, holds=True), echo=a.beats)) is None  # it heard us since we woke
    assert a.active  # no one took over: it goes on
    a.froze(2 * EXPIRY)
    assert a.heard(dict(beat(Role.ACTIVE, 2), echo=0)) == "fence"  # a higher epoch is news at any time


def test_the_restarted_old_primary_becomes_standby_of_the_broker_that_holds_the_state(ctx):
    a = pair(ctx, primary=True)  # restarted: it holds nothing
    assert a.heard(beat(Role.ACTIVE, 2)) is None and a.role is Role.STANDBY and a.epoch == 2
    b = pair(ctx, primary=False)  # a standby holding the state hears the restarted primary, not active
    b.heard(beat(Role.ACTIVE, 1, primary=True))
    b.holds = True
    assert b.heard(beat(Role.STARTING, 1, primary=True)) == "take over" and b.role is Role.ACTIVE


def test_answers_kept_are_bounded_and_no_predict_pushes_out_an_effect():
    import numpy as np

    from mesh.broker import answers as kept
    a = kept.Answers()
    a.add((b"c", 0), {"ok": True, "loss": 0.5})  # a backprop's answer
    big = np.zeros((kept.MAX_CACHED_ROWS, 256))  # 8 MiB of outputs a piece
    for i in range(1, 21):
        a.add((b"c", i), {"ok": True}, [big], effect=False)
    assert a.bytes <= kept.MAX_BYTES and a.bytes == sum(x.nbytes for _, _, arrays in a.outputs.values()
                                                          for x in arrays)
    assert (b"c", 20) in a and (b"c", 1) not in a  # the oldest outputs went first
    assert a.get((b"c", 0)) == ({"ok": True, "loss": 0.5}, [])  # the effect stays
    for i in range(21, 21 + kept.MAX_ANSWERS + 5):
        a.add((b"c", i), {"ok": True})
    assert len(a.effects) == kept.MAX_ANSWERS and (b"c", 0) not in a
    assert [key[1] for key, *_ in a.since(a.serial - 2)] == [21 + kept.MAX_ANSWERS + 3, 21 + kept.MAX_ANSWERS + 4]
