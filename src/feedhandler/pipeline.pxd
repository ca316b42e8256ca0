# The Feed: the feed core's producer (feedhandler.core.producer) with a capture file as its source.
from feedhandler.core.producer cimport Producer
from feedhandler.includes.pcap cimport fh_filesrc

cdef class Feed(Producer):
    cdef fh_filesrc *src
    cdef object path
    cdef object _midnight_ns
    cdef readonly str protocol
