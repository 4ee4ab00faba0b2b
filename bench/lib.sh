# bench/lib.sh: what the shell benchmarks share (sourced).
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
free_port() { node -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
# The run's settings from the environment, with defaults: rounds and seconds per run.
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15}
