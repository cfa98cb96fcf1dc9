"""The life of one network at the broker, as one state machine.

                 created                train started
    STARTING ─────────────▶ READY ◀────────────────────▶ TRAINING
        │                 ▲   │      train ended                │
        │                 │   │ group lost                      │ group lost
        │       recovered │   ▼                                 ▼
        │                 └─ RECOVERING ◀───────────────────────┘
        │                     │   ▲  │ recovered, training resumes ──▶ TRAINING
        │                     │   └──┘ group lost again (start over),
        │                     │        train ended (it failed or was cancelled meanwhile)
        │ failed              │ failed
        ▼                     ▼
      FAILED ◀──── READY, TRAINING (failed: no snapshot, no worker left)
        │
        ▼ dropped (from every state but DROPPED)
      DROPPED

STARTING   groups are spawned, wired and snapshotted for the first time.
READY      answers predict, backprop, weights, save...; an online run is a
           stream of predicts and backprops, so it runs in READY.
TRAINING   one Train job owns the steps; backprop and set_weights are refused.
RECOVERING dead groups are respawned and the snapshot and step log replayed;
           requests wait (the broker defers them) and resume after.
FAILED     the network cannot answer (why: Lifecycle.failure); only drop.
DROPPED    its processes were told to stop; its id is forgotten.

A snapshot being taken is not a state: it pauses requests for a moment in
READY or TRAINING (Network.snapshotting). Cancel is not a state either: it
ends the Train job at a step boundary, which is the TRAIN_ENDED event.
"""
import enum


class State(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    TRAINING = "training"
    RECOVERING = "recovering"
    FAILED = "failed"
    DROPPED = "dropped"


class Event(enum.Enum):
    CREATED = "created"                  # every group wired and the first snapshot taken
    TRAIN_STARTED = "train started"
    TRAIN_ENDED = "train ended"          # finished, failed or cancelled
    GROUP_LOST = "group lost"            # a group died or went silent, and a snapshot exists
    RECOVERED = "recovered"              # rebuilt; no training to resume
    RECOVERED_TRAINING = "recovered, training resumes"
    FAILED = "failed"                    # cannot be rebuilt, or starting did not finish
    DROPPED = "dropped"


S, E = State, Event
TRANSITIONS = {
    (S.STARTING, E.CREATED): S.READY,
    (S.STARTING, E.FAILED): S.FAILED,
    (S.READY, E.TRAIN_STARTED): S.TRAINING,
    (S.READY, E.GROUP_LOST): S.RECOVERING,
    (S.READY, E.FAILED): S.FAILED,
    (S.TRAINING, E.TRAIN_ENDED): S.READY,
    (S.TRAINING, E.GROUP_LOST): S.RECOVERING,
    (S.TRAINING, E.FAILED): S.FAILED,
    (S.RECOVERING, E.GROUP_LOST): S.RECOVERING,
    (S.RECOVERING, E.TRAIN_ENDED): S.RECOVERING,
    (S.RECOVERING, E.RECOVERED): S.READY,
    (S.RECOVERING, E.RECOVERED_TRAINING): S.TRAINING,
    (S.RECOVERING, E.FAILED): S.FAILED,
    (S.FAILED, E.TRAIN_ENDED): S.FAILED,   # the job of a failed network ends after it
}
TRANSITIONS.update({(s, E.DROPPED): S.DROPPED for s in State if s is not S.DROPPED})


class IllegalTransition(AssertionError):
    """A broker bug: an event that cannot happen in the current state."""


class Lifecycle:
    """The current state of one network, changed only by fire()."""

    def __init__(self, name):
        self.name = name
        self.state = State.STARTING
        self.failure = None   # why the network failed, once FAILED

    def fire(self, event, why=None):
        new = TRANSITIONS.get((self.state, event))
        if new is None:
            raise IllegalTransition(f"network {self.name}: {event.value!r} cannot happen while {self.state.value}")
        if new is State.FAILED and self.failure is None:
            self.failure = why
        self.state = new
        return new

    def can(self, event):
        return (self.state, event) in TRANSITIONS
