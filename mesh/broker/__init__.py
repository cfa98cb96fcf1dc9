"""The broker, as a package: one module per job of the control plane.

    loop.py       the loop, the registry of workers and networks, Ports for jobs
    clientops.py   what clients may ask (one handler each, one table)
    states.py     a network's state machine (its docstring is the diagram)
    network.py    the record of one network; passes.py, a pass and the fair queue
    dataflow.py   passes in and out of the mesh (no sockets: it is given a send)
    ports.py      the narrow surface a job sees of the broker
    jobs.py       Create, Predict, Backprop, Collect, SetWeights
    training.py   Train and Cancel; steplog.py, steps sent and logged
    snapshots.py  Snapshot; recovery.py, Recover
    placement.py  where groups run and how they are wired
    pairing.py     the broker as one of a pair; pairstate.py, which one is active (Binary Star with epochs)
    replication.py    what the active ships its standby; takeover.py, the standby taking over;
                  answers.py, answers kept for a client that asks again
"""
from .loop import BindError, Broker, main

__all__ = ["Broker", "BindError", "main"]
