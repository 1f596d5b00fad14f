"""What a failed collective says about the other processes of a run: one died, or one stopped answering.

Read by the command line's error printer for every command's error, so this module imports nothing.
"""

# Neither backend gives a lost peer its own exception type: gloo raises a plain RuntimeError (checked
# with torch 2.14) and NCCL a DistBackendError for every kind of failure. Only the text tells.
_LOST_PEER_SIGNS = ("Connection closed by peer", "Connection reset by peer", "NCCL communicator was aborted",
                    "Broken pipe")


def lost_a_peer(exc: BaseException) -> bool:
    """Whether ``exc`` says another process of the run died (a killed or crashed rank)."""
    return any(sign in str(exc) for sign in _LOST_PEER_SIGNS)


# A peer alive but silent (stopped, hung on a file system): gloo's words, then NCCL's watchdog's.
_TIMED_OUT_SIGNS = ("Timed out waiting", "Watchdog caught collective operation timeout")


def peer_timed_out(exc: BaseException) -> bool:
    """Whether ``exc`` says a collective waited past the process group's timeout for another process."""
    return any(sign in str(exc) for sign in _TIMED_OUT_SIGNS)
