// The chaos suite on one nats-server, one Cassandra node and one worker at a time (the
// default deployment); see test/support/chaos-suite.ts.
import { chaosSuite } from "../support/chaos-suite.js";

chaosSuite("single");
