# The run control shared by the two compiled modules (each includes this file: each has its own
# copy of the C state, see src/fc_common.h): the fc_run API that stops every thread at the first
# failure and lets the calling thread run Python's signal handlers, and the testing hook that
# makes one item fail. The including module defines fc_idx and imports threading.

cdef extern from "fc_common.h" nogil:
    ctypedef struct fc_run:
        pass
    int FC_RUN_RAISED
    void fc_run_init(fc_run *r, int flush, int poll, int (*check_signals)() noexcept nogil)
    unsigned fc_run_enter(const fc_run *r)
    void fc_run_leave(unsigned saved)
    int fc_run_state(const fc_run *r)
    int fc_run_stopped(const fc_run *r)
    void fc_run_done(fc_run *r, int status)

cdef extern from "Python.h":
    int PyErr_CheckSignals()  # needs the GIL; -1 with the handler's exception set
    unsigned long PyThread_get_thread_ident() nogil


# Testing hook: the item of this index reports a failure (out of memory), as if its workspace
# could not be allocated; -1: none.
cdef fc_idx _fail_item = -1


def _set_fail_item(fc_idx i):
    global _fail_item
    _fail_item = i


# Signals are handled on Python's main thread only: a call from another thread never stops.
cdef unsigned long _main_thread = threading.main_thread().ident


cdef int _check_signals() noexcept nogil:
    """Run Python's pending signal handlers (Ctrl-C: KeyboardInterrupt); -1 if one raised."""
    with gil:
        return PyErr_CheckSignals()
