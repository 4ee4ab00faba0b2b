import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { canonicalQueryOf, loadCredentials, parseS3Url, signV4 } from '../../src/backup/s3.js';

describe('S3: SigV4 signing and settings', () => {
  it('signs AWS\'s published GET Bucket (List Objects) example to its signature', () => {
    const headers: Record<string, string> = {
      host: 'examplebucket.s3.amazonaws.com',
      'x-amz-content-sha256': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
    };
    signV4({
      method: 'GET', pathname: '/', canonicalQuery: canonicalQueryOf({ prefix: 'J', 'max-keys': '2' }), headers,
      payloadHash: 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', region: 'us-east-1',
      credentials: { accessKeyId: 'AKIAIOSFODNN7EXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' },
      now: new Date('2013-05-24T00:00:00Z'),
    });
    assert.equal(headers['x-amz-date'], '20130524T000000Z');
    assert.equal(
      headers.authorization,
      'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, ' +
        'Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7',
    );
  });

  it('encodes query values as RFC 3986 wants', () => {
    assert.equal(canonicalQueryOf({ prefix: 'a b/c*', 'list-type': '2' }), 'list-type=2&prefix=a%20b%2Fc%2A');
  });

  it('parses s3:// URLs and refuses others', () => {
    assert.deepEqual(parseS3Url('s3://my-bucket/pgs/prod/'), { bucket: 'my-bucket', prefix: 'pgs/prod' });
    assert.deepEqual(parseS3Url('s3://my-bucket'), { bucket: 'my-bucket', prefix: '' });
    assert.throws(() => parseS3Url('https://my-bucket'), /invalid backup target/);
    assert.throws(() => parseS3Url('s3://A'), /invalid backup target/);
  });

  it('reads credentials from the environment, or a profile of the shared credentials file', async () => {
    assert.deepEqual(loadCredentials({ AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' }), { accessKeyId: 'a', secretAccessKey: 'b' });
    const { writeFileSync, mkdtempSync, rmSync } = await import('node:fs');
    const dir = mkdtempSync('/tmp/pgs-aws-');
    try {
      writeFileSync(`${dir}/credentials`, '[default]\naws_access_key_id = d1\naws_secret_access_key = d2\n\n[other]\naws_access_key_id=o1\naws_secret_access_key=o2\naws_session_token=o3\n');
      assert.deepEqual(loadCredentials({ AWS_SHARED_CREDENTIALS_FILE: `${dir}/credentials` }), { accessKeyId: 'd1', secretAccessKey: 'd2' });
      assert.deepEqual(loadCredentials({ AWS_SHARED_CREDENTIALS_FILE: `${dir}/credentials`, AWS_PROFILE: 'other' }), { accessKeyId: 'o1', secretAccessKey: 'o2', sessionToken: 'o3' });
      assert.throws(() => loadCredentials({ AWS_SHARED_CREDENTIALS_FILE: `${dir}/none` }), /no S3 credentials/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
