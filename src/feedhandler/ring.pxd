# The Ring extension type, for other Cython modules: `from feedhandler.ring cimport Ring`, then drive
# `r.ring` with the nogil functions of feedhandler.includes.ring (one producer, one consumer; see the
# contract at the top of fh/ring.h). The Ring owns the pointer: keep the Ring alive while using it.
from feedhandler.includes.ring cimport fh_ring

cdef class Ring:
    cdef fh_ring *ring
    cdef object __weakref__
