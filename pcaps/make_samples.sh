#!/bin/sh
# Regenerate the sample captures of this folder with `feedhandler synth` (deterministic: the same
# seed gives the same bytes). Both files hold the same synthetic NASDAQ TotalView-ITCH 5.0 day
# (20,000 messages, 25 symbols, trading day 2024-03-15):
#   itch50_sample.pcap    MoldUDP64 over Ethernet/IPv4/UDP multicast, nanosecond pcap
#   itch50_sample.bin.gz  the same messages as a gzip-compressed NASDAQ BinaryFILE
# Usage: pcaps/make_samples.sh [feedhandler executable]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
fh=${1:-feedhandler}
common="--messages 20000 --symbol-count 25 --seed 20240315 --date 2024-03-15"
"$fh" synth "$here/itch50_sample.pcap" $common --format pcap
"$fh" synth "$here/itch50_sample.bin.gz" $common --format binaryfile --gzip
# The other protocols' samples (each generator is deterministic per seed; tests check these bytes):
#   mdp3_sample.pcap   CME MDP 3.0 (schema 9), 200 messages, A and B incremental feeds + snapshot loop
#   fix44_sample.pcap  FIX 4.4 order entry + market data over one TCP connection, 300 messages
#   ouch42_sample.pcap OUCH 4.2 over SoupBinTCP, one session, 300 messages
#   ouch50_sample.pcap OUCH 5.0 (with appendages) over SoupBinTCP, one session, 300 messages
"$fh" synth "$here/mdp3_sample.pcap" --protocol mdp3 --messages 200 --seed 1 --ab -q
"$fh" synth "$here/fix44_sample.pcap" --protocol fix --fix-version 44 --messages 300 --seed 44 -q
"$fh" synth "$here/ouch42_sample.pcap" --protocol ouch42 --messages 300 --seed 42 -q
"$fh" synth "$here/ouch50_sample.pcap" --protocol ouch50 --messages 300 --seed 50 -q
