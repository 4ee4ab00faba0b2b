#!/usr/bin/env node
// The CLI is bundled into one file (npm run build): every command pays Node's
// module loading, and one file loads about 30 ms faster than thirty.
import { main } from '../dist/bundle/pgs.js';

process.exitCode = await main(process.argv.slice(2));
