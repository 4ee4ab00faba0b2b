import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { child, childText, childrenNamed, parseXml, XmlError, type XmlElement } from '../../src/backup/xml.js';

const escape = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const serialize = (el: XmlElement): string => {
  const attributes = Object.entries(el.attributes).map(([k, v]) => ` ${k}="${escape(v).replace(/"/g, '&quot;')}"`).join('');
  // The element's text goes first, then its children: what the parser gives back as `text` is all of it.
  return `<${el.name}${attributes}>${escape(el.text)}${el.children.map(serialize).join('')}</${el.name}>`;
};

const xmlName = fc.stringMatching(/^[A-Za-z_][A-Za-z0-9._-]{0,8}$/);
const xmlText = fc.string({ maxLength: 20 }).map((s) => s.replace(/[^\t\n\x20-\ud7ff\ue000-\ufffd]/g, ''));
const elementOf = (depth: number): fc.Arbitrary<XmlElement> => fc.record({
  name: xmlName,
  attributes: fc.dictionary(xmlName, xmlText, { maxKeys: 3 }).map((d) => Object.fromEntries(Object.entries(d))),
  children: depth === 0 ? fc.constant([]) : fc.array(elementOf(depth - 1), { maxLength: 3 }),
  text: xmlText,
});
const element = elementOf(3);

describe('XML: the strict parser for S3 answers', () => {
  it('reads what S3 sends: a declaration, a namespace, entities, nested lists', () => {
    const doc = parseXml(`<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><IsTruncated>true</IsTruncated>
  <Contents><Key>a/b&amp;c &lt;1&gt; &#233;&#x1F600;</Key><Size>12</Size></Contents>
  <Contents><Key><![CDATA[x<y]]></Key><Size>0</Size></Contents>
  <!-- a comment -->
  <NextContinuationToken>t&quot;k&apos;</NextContinuationToken>
</ListBucketResult>`);
    assert.equal(doc.name, 'ListBucketResult');
    assert.equal(doc.attributes.xmlns, 'http://s3.amazonaws.com/doc/2006-03-01/');
    assert.deepEqual(childrenNamed(doc, 'Contents').map((c) => childText(c, 'Key')), ['a/b&c <1> é😀', 'x<y']);
    assert.equal(childText(doc, 'NextContinuationToken'), 't"k\'');
    assert.equal(child(doc, 'Missing'), undefined);
    assert.deepEqual(parseXml('\uFEFF<a/>'), { name: 'a', attributes: {}, children: [], text: '' });
  });

  it('refuses every malformed document with the reason', () => {
    const bad: [string, RegExp][] = [
      ['', /no root element/],
      ['<a>', /not closed/],
      ['<a></b>', /<\/b> closes <a>/],
      ['<a>x</a><b/>', /after the root/],
      ['<a>&foo;</a>', /unknown entity &foo;/],
      ['<a>& b</a>', /starts no reference/],
      ['<a>&#0;</a>', /not a character XML allows/],
      ['<a>&#xD800;</a>', /not a character XML allows/],
      ['<a x=1/>', /not quoted/],
      ['<a x="1" x="2"/>', /attribute x twice/],
      ['<a x="<"/>', /"<" in text or an attribute/],
      ['<!DOCTYPE a [<!ENTITY e "boom">]><a>&e;</a>', /document type declaration/],
      ['<a><!DOCTYPE b></a>', /document type declaration/],
      ['<a><!-- x -- y --></a>', /"--" inside a comment/],
      ['<a><?xml version="1.0"?></a>', /declaration that is not at the start/],
      ['<a><![CDATA[x</a>', /CDATA section is not closed/],
      ['<1a/>', /a name was expected/],
      ['<a b/>', /"=" after attribute b/],
      [`${'<a>'.repeat(65)}${'</a>'.repeat(65)}`, /nested deeper than 64/],
    ];
    for (const [text, reason] of bad) assert.throws(() => parseXml(text), (err: unknown) => err instanceof XmlError && reason.test(err.message), text);
  });

  it('gives back any tree it is given written out (property)', () => {
    fc.assert(fc.property(element, (tree) => {
      const back = parseXml(serialize(tree));
      const normal = (el: XmlElement): unknown => ({ name: el.name, attributes: el.attributes, text: el.text, children: el.children.map(normal) });
      // Attribute values lose nothing; text keeps every character (tabs and newlines included).
      assert.deepEqual(normal(back), normal(tree));
    }), { numRuns: 300 });
  });

  it('never throws anything but an XmlError, whatever the bytes (property)', () => {
    fc.assert(fc.property(fc.string({ maxLength: 60, unit: fc.constantFrom('<', '>', '/', '&', ';', '#', 'x', 'a', '"', '=', ' ', '!', '-', '?', '[', ']', 'C', 'D') }), (text) => {
      try {
        parseXml(text);
      } catch (err) {
        assert.ok(err instanceof XmlError, String(err));
      }
    }), { numRuns: 2000 });
  });
});
