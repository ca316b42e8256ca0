# The MoldUDP64 framer as a feed-core Framer (feedhandler.core.producer).
from feedhandler.core.producer cimport Framer
from feedhandler.includes.moldudp64 cimport fh_framer

cdef class MoldUdp64Framer(Framer):
    cdef fh_framer *fr
