"""Several forwarder threads (issue 13 item 5; services/forwarder/threads.cpp,
thread_group.h): with forwarder_threads = 2 and crypto_workers = 2 ipsecd opens
the TUN with IFF_MULTI_QUEUE and two queues, and the forwarder reads each on
its own thread. Parallel TCP and UDP flows both ways (the kernel spreads them
over the queues by their hash) carry their bytes intact (SHA-256); both
queues were read; packets read on the thread that does not own their SA were
handed to the owner; and no sequence number of one SA was sent twice (GCM's
IV is the sequence number: two threads sealing under one SA would reuse a
nonce), checked on the wire and by the peer's replay counter. A SIGKILL of
the forwarder restarts the data plane with both queues."""

import os
import re
import sys
import threading
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "interop"))

import espeer  # noqa: E402
from harness import INNER, Testbed, run, tcp_transfer  # noqa: E402
from test_tun_offload import udp_transfer  # noqa: E402

ESP_LINE = re.compile(r"IP (\S+) > (\S+): ESP\(spi=(0x[0-9a-f]+),seq=(0x[0-9a-f]+)\)")


def parallel(jobs):
    """Runs each callable on its own thread; re-raises the first failure."""
    errors = []

    def run_one(job):
        try:
            job()
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)
    threads = [threading.Thread(target=run_one, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if any(t.is_alive() for t in threads):
        raise AssertionError("a transfer did not end within 120 s")
    if errors:
        raise errors[0]


class MultiQueueTest(unittest.TestCase):
    def counters(self, h):
        return h.stats()["ipsec-forwarder"]["counters"]

    def flows(self, tb, base_port):
        """Eight TCP flows A → B, eight B → A, one UDP each way, at once; contents checked.

        A flow's first packets go to the TUN queue its hash picks; after that the
        kernel (automq) reads it from the queue that last wrote its return
        traffic: eight new flows each way make it all but certain that both
        queues are read on both hosts (all on one: 2 / 2^8)."""
        jobs = [lambda p=base_port + i: tcp_transfer(tb.a, tb.b, INNER[4][1], nbytes=1 << 20, port=p)
                for i in range(8)]
        jobs += [lambda p=base_port + 10 + i: tcp_transfer(tb.b, tb.a, INNER[4][0], nbytes=1 << 20, port=p)
                 for i in range(8)]
        jobs.append(lambda: udp_transfer(tb.a, tb.b, INNER[4][1], rounds=32, port=base_port + 31))
        jobs.append(lambda: udp_transfer(tb.b, tb.a, INNER[6][0], rounds=32, port=base_port + 30))
        parallel(jobs)

    def check_threads(self, tb, before):
        """Both queues read on both hosts, hand-offs made, none dropped, no replay at either end."""
        for h in tb.hosts():
            c, b = self.counters(h), before[h.side]
            for q in (0, 1):
                name = f"tun_queue{q}_reads"
                self.assertGreater(c[name] - b.get(name, 0), 0, f"{h.side}: TUN queue {q} never read")
            self.assertGreater(c["thread_handoff_packets"] - b.get("thread_handoff_packets", 0), 0,
                               f"{h.side}: no packet went to its SA's thread")
            # A thread reads only while the queues it may hand to have room: a
            # full queue puts its reads off (the kernel holds the packets), so
            # no packet plain ESP carries is ever dropped on the way.
            handed = c["thread_handoff_packets"] - b.get("thread_handoff_packets", 0)
            dropped = c["thread_handoff_drop_full"] - b.get("thread_handoff_drop_full", 0)
            stalls = c["thread_handoff_stall_full"] - b.get("thread_handoff_stall_full", 0)
            print(f"{h.side}: {handed} handed off, reads put off {stalls} times, queue reads "
                  f"{c['tun_queue0_reads'] - b.get('tun_queue0_reads', 0)}/"
                  f"{c['tun_queue1_reads'] - b.get('tun_queue1_reads', 0)}", file=sys.stderr)
            self.assertEqual(dropped, 0, f"{h.side}: a handed-off packet was dropped")
            self.assertEqual(c["thread_handoff_taken"] - b.get("thread_handoff_taken", 0), handed,
                             f"{h.side}: packets handed off but never taken")
            self.assertEqual(c["esp_in_drop_replay"], 0, f"{h.side}: replayed or duplicate sequence numbers")
            self.assertEqual(c["out_drop_seq_wait"], 0, f"{h.side}: an SA sealed off its owner thread")

    def assert_sequence_numbers_unique(self, cap):
        seen = {}
        for m in ESP_LINE.finditer(cap.text()):
            key = (m.group(1), m.group(3), int(m.group(4), 16))
            seen[key] = seen.get(key, 0) + 1
        self.assertGreater(len(seen), 1000, "too few ESP packets captured to judge")
        twice = [k for k, n in seen.items() if n > 1]
        self.assertEqual(twice, [], f"{len(twice)} sequence numbers sent more than once, e.g. {twice[:5]}")

    def tun_queues(self, h):
        r = run(["ip", "netns", "exec", h.ns, "ls", "/sys/class/net/ipsec0/queues"])
        return sorted(q for q in r.stdout.split() if q.startswith("tx-"))

    def test_two_queues_two_threads(self):
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, crypto_workers=2, forwarder_threads=2)
            for h in tb.hosts():
                self.assertEqual(self.tun_queues(h), ["tx-0", "tx-1"], f"{h.side}: the TUN's queues")
            pcap = os.path.join(tb.tmp, "wire.pcap")
            before = {h.side: {} for h in tb.hosts()}
            with espeer.Capture(tb.b, pcap) as cap:
                self.flows(tb, 5100)
                cap.stop()
                self.assert_sequence_numbers_unique(cap)
            self.check_threads(tb, before)

            # A restarted data plane gets both queues again.
            before = {h.side: self.counters(h) for h in tb.hosts()}
            before["a"] = {}
            tb.a.kill_forwarder_and_wait_for_its_sas()
            self.flows(tb, 5200)
            self.check_threads(tb, before)

    def test_three_workers_on_two_threads(self):
        """Thread 0 drives workers 0 and 2, thread 1 worker 1: uneven shares carry traffic too."""
        with Testbed() as tb:
            tb.start_pair("aes-gcm", 4, crypto_workers=3, forwarder_threads=2)
            with espeer.Capture(tb.b, os.path.join(tb.tmp, "wire.pcap")) as cap:
                self.flows(tb, 5300)
                cap.stop()
                self.assert_sequence_numbers_unique(cap)
            for h in tb.hosts():
                c = self.counters(h)
                self.assertEqual(c["esp_in_drop_replay"], 0, f"{h.side}: replayed or duplicate sequence numbers "
                                 f"(worker_pin_no_buffer {c['worker_pin_no_buffer']}, "
                                 f"handed off {c['thread_handoff_packets']})")
                self.assertEqual(c["out_drop_seq_wait"], 0, f"{h.side}: an SA sealed off its owner thread")

    def test_fewer_workers_than_threads_is_refused(self):
        with Testbed() as tb:
            with self.assertRaises(RuntimeError):
                tb.start(tb.a, crypto_workers=1, forwarder_threads=2)
            self.assertIn("forwarder_threads: 2 threads need crypto_workers of at least as many", tb.log_text(tb.a))


if __name__ == "__main__":
    unittest.main()
