// ipsec-forwarder: its tables as keydb and policy push them — the SAD copy
// (sa_table.h), the SPD copy (spd.h) — and when it last asked for a key
// (acquire_times.h). One include for the code that uses them together.
#pragma once

#include "acquire_times.h"
#include "sa_table.h"
#include "spd.h"
