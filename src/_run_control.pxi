# The run loop of every kernel call, convolution and pooling alike: prepare the job, run its items
# in parallel, then its reduction items, free it. The fc_run API of src/fc_common.h stops every
# thread at the first failure and lets the calling thread run Python's signal handlers.

cdef extern from "fc_kernels.h" nogil:
    ctypedef struct fc_run:
        pass
    int FC_RUN_RAISED
    void fc_run_init(fc_run *r, int flush, int poll, int (*check_signals)() noexcept nogil)
    unsigned fc_run_enter(const fc_run *r)
    void fc_run_leave(unsigned saved)
    int fc_run_state(const fc_run *r)
    int fc_run_stopped(const fc_run *r)
    void fc_run_done(fc_run *r, int status)

    ctypedef struct fc_schedule:
        fc_idx npre, nitems, nreduce, chunk
    ctypedef struct fc_task:
        int (*prepare)(void *job, int nthreads, fc_schedule *s) noexcept nogil
        int (*pre_item)(void *job, fc_idx i) noexcept nogil
        int (*item)(void *job, fc_idx i) noexcept nogil
        int (*reduce_item)(void *job, fc_idx i) noexcept nogil
        void (*finish)(void *job) noexcept nogil

cdef extern from "Python.h":
    int PyErr_CheckSignals()  # needs the GIL; -1 with the handler's exception set
    unsigned long PyThread_get_thread_ident() nogil


# The item of this index reports a failure (out of memory), as if its workspace could not be
# allocated; -1: none. Set by _testing_set_fail_item (src/_testing.pxi).
cdef fc_idx _fail_item = -1

# Signals are handled on Python's main thread only: a call from another thread never stops.
cdef unsigned long _main_thread = threading.main_thread().ident

# set_flush_denormal's setting, applied to every thread of every call
cdef bint _flush_denormal = False


cdef int _check_signals() noexcept nogil:
    """Run Python's pending signal handlers (Ctrl-C: KeyboardInterrupt); -1 if one raised."""
    with gil:
        return PyErr_CheckSignals()


cdef int _run(void *job, const fc_task *task, int nthreads, str workspace) except -1:
    """Run one kernel call on ``nthreads`` threads; ``workspace`` names it in the MemoryError.

    Items are independent, so the schedule cannot change any result; a dynamic schedule keeps
    every core busy when the machine is shared, in the chunks the job's schedule asks for (the
    items that reuse one buffer). The call's fc_run sets every thread's floating-point mode,
    stops all threads at the first failure, and lets the calling thread, when it is Python's main
    thread, run the signal handlers every FC_POLL_SECONDS between its items: an exception they
    raise (Ctrl-C: KeyboardInterrupt) is raised here, after the job is freed.
    """
    cdef fc_idx i
    cdef int status
    cdef unsigned mode = 0  # each thread's own (firstprivate)
    cdef fc_schedule s
    cdef fc_run run
    s.npre = s.nitems = s.nreduce = 0
    s.chunk = 1
    fc_run_init(&run, _flush_denormal, PyThread_get_thread_ident() == _main_thread,
                _check_signals)
    with nogil:
        status = task.prepare(job, nthreads, &s)
        if status == 0 and s.npre > 0:
            # a region of its own: every item reads what the preparation items write
            with parallel(num_threads=nthreads):
                mode = fc_run_enter(&run)
                for i in prange(s.npre, schedule="dynamic"):
                    if not fc_run_stopped(&run):
                        fc_run_done(&run, task.pre_item(job, i))
                fc_run_leave(mode)
        if status == 0 and not fc_run_stopped(&run):
            with parallel(num_threads=nthreads):
                mode = fc_run_enter(&run)
                for i in prange(s.nitems, schedule="dynamic", chunksize=s.chunk):
                    if not fc_run_stopped(&run):
                        fc_run_done(&run, task.item(job, i) if i != _fail_item else -1)
                fc_run_leave(mode)
        if status == 0 and s.nreduce > 0 and not fc_run_stopped(&run):
            # a region of its own: the reduction reads what every item wrote
            with parallel(num_threads=nthreads):
                mode = fc_run_enter(&run)
                for i in prange(s.nreduce, schedule="dynamic"):
                    if not fc_run_stopped(&run):
                        fc_run_done(&run, task.reduce_item(job, i))
                fc_run_leave(mode)
        task.finish(job)
    if fc_run_state(&run) & FC_RUN_RAISED:
        return -1  # with the exception the signal handler raised
    if status != 0 or fc_run_stopped(&run):
        raise MemoryError(f"fastconv: out of memory for a {workspace} workspace")
    return 0
