"""The broker, as a package: one module per job of the control plane.

    loop.py         the loop: poll, route each message by its kind, tick; Ports for jobs
    serve.py        a broker as a process (`mesh broker`)
    registry.py     the workers: register, heartbeats, spawned and exited groups, lost workers
    inbox.py        what groups tell the broker (hello, heartbeats, ready, snapshots kept...)
    clientops.py    what clients may ask (one handler each, one table)
    building.py     placing, spawning, wiring and stopping a network's groups
    encoding.py     a request's rows -> layer 1's input, growing it for new columns
    losses.py       groups lost: recover, or fail the network
    records.py      WorkerRecord and GroupRecord: the registry's schema
    statusview.py   the state as plain data: `mesh status`, the dashboard
    states.py       a network's state machine (its docstring is the diagram)
    network.py      the record of one network; passes.py, a pass and the fair queue
    dataflow.py     passes in and out of the mesh (no sockets: it is given a send)
    ports.py        the narrow surface a job sees of the broker
    jobs.py         Create, Predict, Backprop, Collect, SetWeights
    trainrun.py     Train, a training run; training.py, its exact and async runs; cancel.py, Cancel
    steplog.py      steps sent and logged; trainopts.py, a run's options
    snapshots.py    Snapshot; recovery.py, Recover; checkpoints.py, to disk during training
    placement.py    where groups run and how they are wired; budgets.py, memory and disk
    liveness.py     when a silent group is dead; leases.py, predicts that skip the broker
    pairing.py      the broker as one of a pair; pairstate.py, which one is active (Binary Star with epochs)
    replication.py  what the active ships its standby; takeover.py, the standby taking over;
                    answers.py, answers kept for a client that asks again
"""
from .loop import Broker
from .serve import BindError, main

__all__ = ["Broker", "BindError", "main"]
