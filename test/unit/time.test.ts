import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isPgsError } from '../../src/core/errors.js';
import { parsePointInTime } from '../../src/core/time.js';

/** Times as people write them: psql's now(), ISO 8601 with any offset, local time; and what is refused. */
describe('parsePointInTime', () => {
  const zone = process.env.TZ;
  before(() => {
    process.env.TZ = 'America/New_York'; // a zone with clock changes: EST -05, EDT -04
  });
  after(() => {
    if (zone === undefined) delete process.env.TZ;
    else process.env.TZ = zone;
  });

  const accepted: [string, string][] = [
    // what select now() prints in psql
    ['2026-12-06 21:00:58.429273+00', '2026-12-06T21:00:58.429273Z'],
    ['2026-12-06 21:00:58+00', '2026-12-06T21:00:58.000Z'],
    ['2026-12-06 21:00:58.5+05:30', '2026-12-06T15:30:58.500Z'],
    ['2026-12-06 13:00:58.000001-08', '2026-12-06T21:00:58.000001Z'],
    ['2026-12-06T21:00:58.429273+00', '2026-12-06T21:00:58.429273Z'],
    // ISO 8601
    ['2026-11-30T14:02:00Z', '2026-11-30T14:02:00.000Z'],
    ['2026-11-30t14:02:00z', '2026-11-30T14:02:00.000Z'],
    ['2026-11-30T14:02:00.123Z', '2026-11-30T14:02:00.123Z'],
    ['2026-11-30T19:32:00+0530', '2026-11-30T14:02:00.000Z'],
    ['2026-11-30T19:32:00+05:30', '2026-11-30T14:02:00.000Z'],
    ['2026-11-30T19:02:00+05', '2026-11-30T14:02:00.000Z'],
    ['2026-11-30T14:02Z', '2026-11-30T14:02:00.000Z'],
    ['2026-12-01T00:02:00+10:00', '2026-11-30T14:02:00.000Z'],
    ['2026-11-30 14:02:00 +0100', '2026-11-30T13:02:00.000Z'],
    ['2026-11-30T14:02:00,5Z', '2026-11-30T14:02:00.500Z'],
    // nanoseconds (date --rfc-3339=ns): microseconds kept
    ['2026-11-30 14:02:00.123456789+00:00', '2026-11-30T14:02:00.123456Z'],
    ['  2026-11-30T14:02:00Z  ', '2026-11-30T14:02:00.000Z'],
    // leap day
    ['2028-02-29 12:00:00+00', '2028-02-29T12:00:00.000Z'],
    ['2000-02-29 12:00:00+00', '2000-02-29T12:00:00.000Z'],
    // local time (New York): winter -05, summer -04
    ['2026-11-30 14:02:00', '2026-11-30T19:02:00.000Z'],
    ['2026-07-01T14:02', '2026-07-01T18:02:00.000Z'],
    ['2026-07-01 14:02:00.250001', '2026-07-01T18:02:00.250001Z'],
  ];
  for (const [text, iso] of accepted) {
    it(`reads ${JSON.stringify(text)} as ${iso}`, () => {
      const parsed = parsePointInTime(text, '--time');
      assert.equal(parsed.iso, iso);
      assert.equal(parsed.date.getTime(), Date.parse(iso));
    });
  }

  const refused: [string, RegExp][] = [
    ['yesterday', /not a time pgs reads/],
    ['', /not a time pgs reads/],
    ['2026-11-30', /not a time pgs reads/],
    ['14:02:00', /not a time pgs reads/],
    ['2026-11-30T14:02:00ZZ', /not a time pgs reads/],
    ['2026-11-30T14:02:00+5', /not a time pgs reads/],
    ['2026-11-30T14:02:00.Z', /not a time pgs reads/],
    ['2026-11-30T14:02:00.1234567890Z', /not a time pgs reads/],
    ['2026-11-30T14:02:00 UTC', /not a time pgs reads/],
    ['2026-1-30T14:02:00Z', /not a time pgs reads/],
    ['1764511320', /not a time pgs reads/],
    ['2026-02-30 10:00:00+00', /February 2026 has no day 30/],
    ['2026-02-29 10:00:00+00', /February 2026 has no day 29/],
    ['1900-02-29 10:00:00+00', /February 1900 has no day 29/],
    ['2026-04-31T10:00:00Z', /April 2026 has no day 31/],
    ['2026-11-00T10:00:00Z', /November 2026 has no day 00/],
    ['2026-13-01T10:00:00Z', /there is no month 13/],
    ['2026-00-01T10:00:00Z', /there is no month 00/],
    ['2026-11-30 25:00:00+00', /there is no hour 25/],
    ['2026-11-30 24:00:00+00', /there is no hour 24/],
    ['2026-11-30 23:60:00+00', /there is no minute 60/],
    ['2026-11-30 23:59:60+00', /there is no second 60/],
    ['2026-11-30 23:00:00+16', /there is no offset \+16/],
    ['2026-11-30 23:00:00+05:60', /there is no offset \+05:60/],
    // New York's clocks skip 02:00 to 03:00 on 2026-03-08
    ['2026-03-08 02:30:00', /does not exist in the local time zone \(America\/New_York/],
  ];
  for (const [text, reason] of refused) {
    it(`refuses ${JSON.stringify(text)}, saying why and every form it takes`, () => {
      assert.throws(() => parsePointInTime(text, '--time'), (err: unknown) => {
        assert.ok(isPgsError(err, 'USAGE'));
        assert.match(err.message, reason);
        assert.ok(err.message.startsWith(`invalid --time ${JSON.stringify(text)}: `), err.message);
        for (const form of ['2026-11-30T14:02:00Z', '+05:30', '+0530', '+05', '2026-11-30 14:02:00.123456+00', '2026-11-30 14:02:00 (no offset: local time, America/New_York)']) {
          assert.ok(err.message.includes(form), `${form} in ${err.message}`);
        }
        return true;
      });
    });
  }

  it('the same instant on both sides of the switch to summer time', () => {
    assert.equal(parsePointInTime('2026-03-08 01:59:59', 'x').iso, '2026-03-08T06:59:59.000Z');
    assert.equal(parsePointInTime('2026-03-08 03:00:00', 'x').iso, '2026-03-08T07:00:00.000Z');
  });

  it('an API field is an invalid request that names the field', () => {
    assert.throws(() => parsePointInTime('soon', 'time', 'INVALID_REQUEST', 'time'), (err: unknown) => isPgsError(err, 'INVALID_REQUEST') && err.field === 'time');
  });
});
