// The chaos suite scaled out: a 3-node NATS cluster, a 3-node Cassandra ring and 3 workers
// that come and go; see test/support/chaos-suite.ts. CI runs a small size (60 000 lines);
// ADCLICK_CHAOS_EVENTS=2000000 runs the large one.
import { chaosSuite } from "../support/chaos-suite.js";

chaosSuite("scaled");
