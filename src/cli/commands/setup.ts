import { PgsError } from '../../core/errors.js';
import { AUTO_IMPORT_CAP_BYTES } from '../../catalog/schema.js';
import { formatBytes, parseImportLimit, parseInteger, printJson, type Command } from '../command.js';
import { formatTable } from '../table.js';
import { runningBudget } from '../../supervisor/budget.js';

export const setup: Command = {
  summary: 'write the config, make the server template and a TLS certificate (idempotent)',
  usage: 'pgs setup [--domain D [--yes]] [--port P] [--cert FILE --key FILE] [--api-listen ADDR:PORT|off] [--tenant-metrics on|off]\n' +
    '                 [--backup-target s3://BUCKET/PREFIX|local] [--s3-endpoint URL] [--s3-region R] [--max-running N|auto]\n' +
    '                 [--import-limit SIZE|auto]\n' +
    '                 [--runtime native|docker|kubernetes] [--image REF] [--pg-bin-path DIR]\n' +
    '                 [--namespace N] [--storage-class C] [--instances 1|2|3] [--json]',
  details: [
    '  --domain D          tenants get host names <id>-<suffix>.D (default pgs.localhost); changing it',
    '                      renames every tenant\'s host name and needs --yes',
    '  --port P            the TLS port the router listens on (default 5432); a running daemon moves',
    '                      to it at once, or says why it cannot and keeps the old one',
    '  --cert FILE         PEM certificate for *.D (default: a self-signed one is generated)',
    '  --key FILE          its PEM private key',
    '  --api-listen A:P    the REST API on TCP, with tokens (default 127.0.0.1:5480); off: only the',
    '                      unix socket. Any address but loopback is served over TLS (the certificate above).',
    '  --tenant-metrics X  per-tenant series (pgs_tenant_*) in /metrics: on (default) or off',
    '  --backup-target T   also keep WAL and backups in S3 (s3://BUCKET/PREFIX), besides <data>/backups;',
    '                      "local": the data folder only (default). Credentials come from the standard',
    '                      AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN) or',
    '                      profile (AWS_PROFILE, ~/.aws/credentials) of the daemon; never stored by pgs.',
    '                      setup writes and deletes a small object there first.',
    '  --s3-endpoint URL   an S3 API server (MinIO, Ceph, ...) instead of AWS',
    '  --s3-region R       default: AWS_REGION, else us-east-1',
    '  --max-running N     servers that may run at once, spares included (default "auto": the host\'s',
    '                      memory / 64 MiB). Waking a tenant beyond it first suspends the idle tenant',
    '                      unused the longest; with none idle, its client waits up to 10 s, then gets',
    '                      FATAL 53300 "too many tenants running on this host".',
    '  --import-limit SIZE the largest export file POST /v1/import (pgs import) takes, e.g. 20G; larger',
    '                      uploads get 413. Default "auto": half of the data root\'s free space above the',
    `                      5 % kept free, measured at each upload, at most ${formatBytes(AUTO_IMPORT_CAP_BYTES)}`,
    '  --runtime R         how tenant servers run: native (default; child processes of the daemon) or',
    '                      docker (a container each, pgs-<home tag>-<id>, from --image, with no network; the',
    '                      Docker engine at DOCKER_HOST=unix:///path or /var/run/docker.sock). Change it',
    '                      with pgs stopped: the data folders are the same on both.',
    '                      kubernetes: each tenant is a CloudNativePG Cluster in --namespace, reached',
    '                      through the API server of the pod or of the kubeconfig (KUBECONFIG, else',
    '                      ~/.kube/config); the operator must be installed there (see the README).',
    '  --image REF         the docker runtime\'s image (default postgres:18): PostgreSQL 18, /bin/sh and cp;',
    '                      on kubernetes, the clusters\' PostgreSQL image (default: the operator\'s)',
    '  --pg-bin-path DIR   the folder of postgres inside the image (default /usr/lib/postgresql/18/bin)',
    '  --namespace N       kubernetes: the tenants\' namespace (default: the kubeconfig\'s, or the pod\'s)',
    '  --storage-class C   kubernetes: the volumes\' storage class (default: the cluster\'s; "" for it)',
    '  --instances N       kubernetes: instances per tenant (default 1; 2 or 3 add streaming replicas',
    '                      and automatic failover)',
    '  --json              print the settings as JSON',
    '',
    'Run it again at any time: it keeps what exists and changes only what you pass.',
    'The PostgreSQL binaries are copied once into the data folder (<data>/pg/<version>/), so that',
    'the servers can run them wherever this package lives. As root, the servers run as the',
    'unprivileged system user "pgs" (created if missing).',
  ].join('\n'),
  options: {
    domain: { type: 'string' }, port: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' },
    'api-listen': { type: 'string' }, 'tenant-metrics': { type: 'string' }, yes: { type: 'boolean' }, json: { type: 'boolean' },
    'backup-target': { type: 'string' }, 's3-endpoint': { type: 'string' }, 's3-region': { type: 'string' }, 'max-running': { type: 'string' },
    'import-limit': { type: 'string' }, runtime: { type: 'string' }, image: { type: 'string' }, 'pg-bin-path': { type: 'string' },
    namespace: { type: 'string' }, 'storage-class': { type: 'string' }, instances: { type: 'string' },
  },
  positionals: [0, 0],
  async run(ctx, _args, values) {
    const port = values.port === undefined ? undefined : parseInteger(String(values.port), '--port', 1, 65535);
    const listen = values['api-listen'] === undefined ? undefined : String(values['api-listen']);
    const metrics = values['tenant-metrics'];
    const maxRunning = values['max-running'] === undefined ? undefined : values['max-running'] === 'auto' ? null : parseInteger(String(values['max-running']), '--max-running', 1, 100000);
    const importLimit = values['import-limit'] === undefined ? undefined : parseImportLimit(String(values['import-limit']));
    const runtime = values.runtime as string | undefined;
    if (runtime !== undefined && runtime !== 'native' && runtime !== 'docker' && runtime !== 'kubernetes') throw new PgsError('USAGE', `invalid --runtime ${JSON.stringify(runtime)}: native, docker or kubernetes`);
    const namespace = values.namespace as string | undefined;
    if (namespace !== undefined && !/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(namespace)) throw new PgsError('USAGE', `invalid --namespace ${JSON.stringify(namespace)}: a Kubernetes name (lower-case letters, digits and -, at most 63)`);
    const instances = values.instances === undefined ? undefined : parseInteger(String(values.instances), '--instances', 1, 3) as 1 | 2 | 3;
    const storageClass = values['storage-class'] as string | undefined;
    const pgBinPath = values['pg-bin-path'] as string | undefined;
    if (pgBinPath !== undefined && !pgBinPath.startsWith('/')) throw new PgsError('USAGE', `invalid --pg-bin-path ${JSON.stringify(pgBinPath)}: an absolute path inside the image`);
    if (metrics !== undefined && metrics !== 'on' && metrics !== 'off') throw new PgsError('USAGE', `invalid --tenant-metrics ${JSON.stringify(metrics)}: on or off`);
    const report = await ctx.pgs().setup({
      domain: values.domain as string | undefined,
      port,
      certFile: values.cert as string | undefined,
      keyFile: values.key as string | undefined,
      ...(listen !== undefined ? { apiListen: listen === 'off' ? null : listen } : {}),
      ...(metrics !== undefined ? { tenantMetrics: metrics === 'on' } : {}),
      ...(values['backup-target'] !== undefined ? { backupTarget: values['backup-target'] === 'local' ? null : String(values['backup-target']) } : {}),
      ...(values['s3-endpoint'] !== undefined ? { s3Endpoint: values['s3-endpoint'] === '' ? null : String(values['s3-endpoint']) } : {}),
      ...(values['s3-region'] !== undefined ? { s3Region: values['s3-region'] === '' ? null : String(values['s3-region']) } : {}),
      ...(maxRunning !== undefined ? { maxRunning } : {}),
      ...(importLimit !== undefined ? { importMaxBytes: importLimit } : {}),
      confirmDomainChange: Boolean(values.yes),
      ...(runtime !== undefined ? { runtime } : {}),
      ...(values.image !== undefined ? { image: String(values.image) } : {}),
      ...(pgBinPath !== undefined ? { pgBinPath } : {}),
      ...(namespace !== undefined ? { namespace } : {}),
      ...(storageClass !== undefined ? { storageClass: storageClass === '' ? null : storageClass } : {}),
      ...(instances !== undefined ? { instances } : {}),
    });
    // A running daemon reads the new settings at once (a new certificate reaches new connections).
    await ctx.api.getIfRunning('/v1/status').then((up) => (up ? ctx.api.request('POST', '/v1/reload') : undefined));
    if (values.json) {
      printJson({ home: report.home, ...report.settings, certificateExpires: report.certificate.validTo.toISOString() });
      return 0;
    }
    for (const action of report.actions) console.log(`- ${action}`);
    const s = report.settings;
    console.log(`pgs is set up in ${report.home}`);
    console.log(formatTable([
      ['domain', s.domain],
      ['port', String(s.port)],
      ['certificate', `${s.certFile}${s.certSelfSigned ? ' (self-signed: it is its own CA, so clients verify with sslmode=verify-full sslrootcert=<this file>)' : ''}, expires ${report.certificate.validTo.toISOString().slice(0, 10)}`],
      ...(s.runtime === 'kubernetes' ? [
        ['runtime', `kubernetes: a CloudNativePG Cluster per tenant in namespace ${s.namespace ?? '(the kubeconfig\'s)'}, ${s.instances ?? 1} instance${(s.instances ?? 1) === 1 ? '' : 's'} each${s.storageClass ? `, storage class ${s.storageClass}` : ''}${s.image ? `, image ${s.image}` : ''}`],
        ['api', s.apiListen ?? 'unix socket only'],
        ['backups', s.backupTarget ? `${s.backupTarget} through the barman-cloud plugin` : 'none (set --backup-target s3://...)'],
      ] : [
        ['data', s.dataRoot],
        ['runtime', s.runtime === 'docker' ? `docker (${s.image ?? 'postgres:18'})` : 'native'],
        ['servers run as', s.serverUser === null ? 'the user running pgs' : `a uid of its own per tenant (the template is built by ${s.serverUser})`],
        ['api', s.apiListen ?? 'unix socket only'],
        ['running at once', s.maxRunning === undefined ? `at most ${runningBudget(undefined)} servers (auto: memory / 64 MiB)` : `at most ${s.maxRunning} servers`],
        ['imports', s.importMaxBytes === undefined ? `uploads up to half the free space of ${s.dataRoot} above 5 %, at most ${formatBytes(AUTO_IMPORT_CAP_BYTES)} (auto)` : `uploads up to ${formatBytes(s.importMaxBytes)}`],
        ['backups', `${s.dataRoot}/backups${s.backupTarget ? ` and ${s.backupTarget}${s.s3Endpoint ? ` at ${s.s3Endpoint}` : ''}` : ''}`],
      ]),
    ], { indent: '  ' }));
    console.log('Next: pgs create <id>');
    return 0;
  },
};
