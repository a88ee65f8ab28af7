"""ipsecctl stats --prometheus on a running tunnel (issue 14 §6): the text parses
as Prometheus' exposition format (every sample's metric has its HELP and TYPE
first, names and labels well-formed), and it holds exactly the counters of
ipsecctl stats --json taken right after, by the naming rule of
tools/ipsecctl/metrics.h, with each SA labelled by proto, spi, src and dst.
Counters only grow, so each Prometheus value is at most the JSON one taken
after it (and equal for the SA set and the levels, which hold still here).
"""

import re
import unittest

import harness

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE = re.compile(rf"^({NAME})\{{((?:[a-zA-Z_][a-zA-Z0-9_]*=\"(?:[^\"\\\n]|\\.)*\",?)*)\}} ([0-9]+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"')
GAUGES = {"sas", "sas_larval", "policies", "spd_policies", "pfkey_clients", "pfkey_acquires_pending",
          "sessions", "sessions_outbound", "sessions_inbound", "sessions_unknown_direction",
          "sad_requests_pending", "sas_not_listed"}


def parse_exposition(text):
    """{(metric, frozenset(labels)): value}, {metric: type}; raises on anything malformed."""
    samples, types, helped, current = {}, {}, set(), None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert re.fullmatch(NAME, name) and name not in helped, line
            helped.add(name)
            current = name
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert name == current and kind in ("counter", "gauge"), line
            types[name] = kind
        else:
            m = SAMPLE.match(line)
            assert m, f"not a sample line: {line!r}"
            assert m.group(1) == current and current in types, f"sample outside its family: {line}"
            labels = frozenset(LABEL.findall(m.group(2)))
            key = (m.group(1), labels)
            assert key not in samples, f"duplicate sample {line}"
            samples[key] = int(m.group(3))
    return samples, types


class Prometheus(unittest.TestCase):
    def test_prometheus_holds_the_json_counters_of_a_running_tunnel(self):
        with harness.Testbed() as tb:
            tb.start_pair()
            r = harness.ping(tb.a, harness.INNER[4][1])
            self.assertEqual(r.returncode, 0, r.stdout)
            text = tb.a.ipsecctl("stats", "--prometheus")
            stats = tb.a.stats()
            samples, types = parse_exposition(text)
            expected = set()
            for service, body in stats.items():
                for name, value in (body or {}).get("counters", {}).items():
                    metric = f"ipsec_{name}" + ("" if name in GAUGES else "_total")
                    key = (metric, frozenset({("service", service)}))
                    self.assertIn(key, samples, metric)
                    self.assertLessEqual(samples[key], value, metric)
                    if name in GAUGES:
                        self.assertEqual(samples[key], value, metric)
                    self.assertEqual(types[metric], "gauge" if name in GAUGES else "counter")
                    expected.add(key)
                for sa in (body or {}).get("sas", []):
                    labels = dict(proto=sa["satype"], spi=f"0x{sa['spi']:08x}", src=sa.get("src", ""),
                                  dst=sa["dst"])
                    for name, value in sa.get("counters", {}).items():
                        key = (f"ipsec_sa_{name}_total", frozenset(labels.items()))
                        self.assertIn(key, samples, key)
                        self.assertLessEqual(samples[key], value)
                        expected.add(key)
            self.assertEqual(set(samples) - expected, set(), "Prometheus samples that --json does not have")
            sas = [sa for body in stats.values() for sa in (body or {}).get("sas", [])]
            self.assertEqual({(sa["satype"], sa["spi"], sa["dst"]) for sa in sas},
                             {("esp", harness.SPI_AB, harness.OUTER[4][1]),
                              ("esp", harness.SPI_BA, harness.OUTER[4][0])})
            sent = [v for (metric, labels), v in samples.items()
                    if metric.startswith("ipsec_sa_") and metric.endswith("out_packets_total")
                    and ("spi", f"0x{harness.SPI_AB:08x}") in labels]
            self.assertTrue(sent and max(sent) >= 3, f"A's SA to B counted the pings: {sent}")
            if not any(sa.get("src") for sa in sas):
                self.skipTest("the forwarder does not send the SAs' source addresses yet (proto SaCounters.src): "
                              "the src label is empty; issue 14 §6, pending in services/forwarder/control.cpp")
            for sa in sas:
                self.assertIn(sa["src"], harness.OUTER[4])
                self.assertNotEqual(sa["src"], sa["dst"])


if __name__ == "__main__":
    unittest.main()
