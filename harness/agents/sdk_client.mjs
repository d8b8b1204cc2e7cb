// The official SpacetimeDB TypeScript SDK (npm `spacetimedb`) as a client, the way an application uses it.
//
// usage: node [--experimental-websocket] sdk_client.mjs --sdk DIR --uri URL --database NAME --bindings JSON
//             [--token TOKEN] [--call-reducer] [--timeout S] [--connect ADDR]
//
// --bindings describes one table and (optionally) one reducer of the module, as generated bindings would:
// {"table": "message", "columns": [["id", "u64", "pk"], ["text", "string"]],
//  "reducer": "add_message", "args": [["text", "string"]]}
//
// Steps, each printed as one JSON line {"event": ...}:
//   connected      client A connects (anonymous unless --token): identity, whether a token came back
//   applied        A subscribes to `SELECT * FROM <table>`: the rows it received
//   returning      client B connects with A's token (the SDK first exchanges it at
//                  POST /v1/identity/websocket-token): B's identity (must equal A's)
//   row-seen       with --call-reducer: A calls the reducer over its websocket (a unique marker in its first
//                  string argument; others: none for options, A's identity, small numbers, empty bytes), and
//                  B's subscription receives the inserted row
//   error          a step failed: {"step", "message"} (the SDK's own error text)
// Exit: 0 all steps done, 1 a step failed, 3 the timeout expired first, 2 bad usage.
// --connect ADDR: open connections to ADDR while the URL's host stays the TLS name and Host header (a vantage
// whose resolver does not know the site's name). Extra CAs come from NODE_EXTRA_CA_CERTS.

import dns from 'node:dns';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

function emit(fields) {
  process.stdout.write(JSON.stringify(fields) + '\n');
}

function parseArgs(argv) {
  const opts = { timeout: 30, callReducer: false };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--sdk') opts.sdk = value();
    else if (flag === '--uri') opts.uri = value();
    else if (flag === '--database') opts.database = value();
    else if (flag === '--bindings') opts.bindings = JSON.parse(value());
    else if (flag === '--token') opts.token = value();
    else if (flag === '--timeout') opts.timeout = Number(value());
    else if (flag === '--connect') opts.connect = value();
    else if (flag === '--call-reducer') opts.callReducer = true;
    else throw new Error(`unknown argument ${flag}`);
  }
  for (const need of ['sdk', 'uri', 'database', 'bindings']) {
    if (!opts[need]) throw new Error(`--${need} is required`);
  }
  return opts;
}

function pinResolver(host, address) {
  // every lookup of `host` answers `address` (the TLS name and Host header stay `host`)
  const original = dns.lookup;
  dns.lookup = (name, options, callback) => {
    if (typeof options === 'function') {
      callback = options;
      options = {};
    }
    if (name !== host) return original(name, options, callback);
    const family = address.includes(':') ? 6 : 4;
    if (options && options.all) return callback(null, [{ address, family }]);
    return callback(null, address, family);
  };
}

function columnType(t, name) {
  const builders = {
    u8: () => t.u8(), u16: () => t.u16(), u32: () => t.u32(), u64: () => t.u64(), u128: () => t.u128(),
    i8: () => t.i8(), i16: () => t.i16(), i32: () => t.i32(), i64: () => t.i64(), i128: () => t.i128(),
    f32: () => t.f32(), f64: () => t.f64(), bool: () => t.bool(), string: () => t.string(),
    bytes: () => t.byteArray(), identity: () => t.identity(),
  };
  const option = /^option<(.+)>$/.exec(name);
  if (option) return t.option(columnType(t, option[1]));
  if (!builders[name]) throw new Error(`column type ${name} is not known to this client`);
  return builders[name]();
}

function argValue(type, identity) {
  if (/^option</.test(type)) return undefined;
  if (/^[ui](64|128)$/.test(type)) return BigInt(Date.now() % 1000000) * 1000n + BigInt(process.pid % 1000);
  if (/^[ui](8|16|32)$/.test(type)) return 1 + (process.pid % 100);
  if (type === 'f32' || type === 'f64') return 0.5;
  if (type === 'bool') return false;
  if (type === 'bytes') return new Uint8Array(0);
  if (type === 'identity') return identity;
  return '';
}

function camel(name) {
  return name.replace(/_([a-z0-9])/g, (_, c) => c.toUpperCase());
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    emit({ event: 'error', step: 'usage', message: String(err.message || err) });
    process.exit(2);
  }
  if (opts.connect) pinResolver(new URL(opts.uri).hostname, opts.connect);
  const sdkEntry = path.join(opts.sdk, 'node_modules', 'spacetimedb', 'dist', 'index.mjs');
  const sdk = await import(pathToFileURL(sdkEntry).href);
  const { DbConnectionBuilder, DbConnectionImpl, procedures, reducerSchema, reducers, schema, t, table } = sdk;
  sdk.setGlobalLogLevel?.('error');

  const b = opts.bindings;
  const row = {};
  for (const [name, type, flag] of b.columns) {
    const col = columnType(t, type);
    row[name] = flag === 'pk' ? col.primaryKey() : col;
  }
  const tablesSchema = schema({ [b.table]: table({ name: b.table }, t.row(row)) });
  const reducerDefs = [];
  if (b.reducer) {
    const args = {};
    for (const [name, type] of b.args || []) args[name] = columnType(t, type);
    reducerDefs.push(reducerSchema(b.reducer, args));
  }
  const reducersSchema = reducers(...reducerDefs);
  const REMOTE_MODULE = {
    versionInfo: { cliVersion: '2.10.1' },
    tables: tablesSchema.schemaType.tables,
    reducers: reducersSchema.reducersType.reducers,
    ...procedures(),
  };

  let step = 'connect';
  const timer = setTimeout(() => {
    emit({ event: 'timeout', step, seconds: opts.timeout });
    process.exit(3);
  }, opts.timeout * 1000);
  const fail = (message) => {
    emit({ event: 'error', step, message: String(message && message.message ? message.message : message) });
    clearTimeout(timer);
    process.exit(1);
  };

  const connect = (token) =>
    new Promise((resolve, reject) => {
      const builder = new DbConnectionBuilder(REMOTE_MODULE, (config) => new DbConnectionImpl(config))
        .withUri(opts.uri)
        .withDatabaseName(opts.database)
        .onConnect((conn, identity, tok) => resolve({ conn, identity: identity.toHexString(), token: tok }))
        .onConnectError((_ctx, err) => reject(err))
        .onDisconnect((_ctx, err) => reject(err || new Error('disconnected')));
      if (token) builder.withToken(token);
      builder.build();
    });

  const subscribe = (conn) =>
    new Promise((resolve, reject) => {
      conn
        .subscriptionBuilder()
        .onApplied(() => resolve([...conn.db[camel(b.table)].iter()].length))
        .onError((_ctx, err) => reject(err))
        .subscribe(`SELECT * FROM ${b.table}`);
    });

  try {
    const a = await connect(opts.token);
    emit({ event: 'connected', identity: a.identity, token_received: Boolean(a.token) });
    step = 'subscribe';
    emit({ event: 'applied', rows: await subscribe(a.conn) });
    step = 'returning';
    const again = await connect(a.token);
    emit({ event: 'returning', identity: again.identity, same_identity: again.identity === a.identity });
    if (opts.callReducer) {
      const markerArg = (b.args || []).find(([, type]) => type === 'string');
      if (!b.reducer || !markerArg) throw new Error('--call-reducer needs a reducer with a string argument');
      step = 'subscribe-second';
      await subscribe(again.conn);
      step = 'reducer';
      const marker = `sdk-${process.pid}-${Date.now()}`;
      const args = {};
      for (const [name, type] of b.args) {
        args[name] = name === markerArg[0] ? marker : argValue(type, a.conn.identity);
      }
      const seen = new Promise((resolve) => {
        again.conn.db[camel(b.table)].onInsert((_ctx, inserted) => {
          if (Object.values(inserted).includes(marker)) resolve(inserted);
        });
      });
      await a.conn.reducers[camel(b.reducer)](args);
      step = 'row-seen';
      await seen;
      emit({ event: 'row-seen', marker });
    }
    a.conn.disconnect();
    again.conn.disconnect();
    clearTimeout(timer);
    process.exit(0);
  } catch (err) {
    fail(err);
  }
}

main().catch((err) => {
  emit({ event: 'error', step: 'start', message: String(err && err.message ? err.message : err) });
  process.exit(1);
});
