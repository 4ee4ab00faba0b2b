/**
 * A strict XML parser for the answers of an S3 API server, which pgs does not
 * trust: a document is either well-formed and returned as a tree, or refused
 * with the reason. What S3 sends is a small subset of XML (a declaration,
 * elements, attributes, text, character and the five predefined entity
 * references, sometimes CDATA and comments), and that subset is what this
 * reads in full. A document type declaration is refused rather than read: it
 * is where entity expansion attacks live, and no S3 answer has one.
 */
export interface XmlElement {
  name: string;
  attributes: Record<string, string>;
  children: XmlElement[];
  /** The element's own text (its character data outside child elements), entities resolved. */
  text: string;
}

export class XmlError extends Error {}

const NAME = /[A-Za-z_:][-A-Za-z0-9._:\u00B7\u00C0-\uFFFF]*/y;
const SPACE = /[ \t\r\n]*/y;
const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
const MAX_DEPTH = 64;

/** Parses a whole document; throws XmlError naming what is wrong and where. */
export function parseXml(input: string): XmlElement {
  let at = input.startsWith('\uFEFF') ? 1 : 0;
  const fail = (what: string): never => {
    const line = input.slice(0, at).split('\n').length;
    throw new XmlError(`malformed XML at line ${line}: ${what}`);
  };
  const skipSpace = () => {
    SPACE.lastIndex = at;
    SPACE.exec(input);
    at = SPACE.lastIndex;
  };
  const name = (): string => {
    NAME.lastIndex = at;
    const match = NAME.exec(input);
    if (!match) return fail('a name was expected');
    at = NAME.lastIndex;
    return match[0];
  };
  const until = (end: string, what: string): string => {
    const stop = input.indexOf(end, at);
    if (stop < 0) return fail(`${what} is not closed`);
    const inner = input.slice(at, stop);
    at = stop + end.length;
    return inner;
  };
  const decode = (raw: string): string => {
    if (raw.includes('<')) fail('"<" in text or an attribute value');
    return raw.replace(/&([^;&]*);?/g, (whole, ref: string) => {
      if (!whole.endsWith(';')) return fail(`"&" that starts no reference`);
      const hex = /^#x([0-9A-Fa-f]{1,6})$/.exec(ref);
      const dec = /^#([0-9]{1,7})$/.exec(ref);
      if (hex || dec) {
        const code = hex ? parseInt(hex[1] ?? '', 16) : Number(dec?.[1]);
        const allowed = code === 0x9 || code === 0xa || code === 0xd || (code >= 0x20 && code <= 0xd7ff) || (code >= 0xe000 && code <= 0xfffd) || (code >= 0x10000 && code <= 0x10ffff);
        if (!allowed) return fail(`character reference &${ref}; is not a character XML allows`);
        return String.fromCodePoint(code);
      }
      const value = PREDEFINED[ref];
      if (value === undefined) return fail(`unknown entity &${ref};`);
      return value;
    });
  };
  /** Comments and processing instructions, which may stand anywhere between markup. */
  const misc = (): boolean => {
    if (input.startsWith('<!--', at)) {
      at += 4;
      const inner = until('-->', 'a comment');
      if (inner.includes('--')) fail('"--" inside a comment');
      return true;
    }
    if (input.startsWith('<?', at)) {
      at += 2;
      const target = name();
      if (target.toLowerCase() === 'xml') fail('an XML declaration that is not at the start');
      until('?>', 'a processing instruction');
      return true;
    }
    return false;
  };
  const element = (depth: number): XmlElement => {
    if (depth > MAX_DEPTH) fail(`elements nested deeper than ${MAX_DEPTH}`);
    at += 1; // '<'
    const el: XmlElement = { name: name(), attributes: {}, children: [], text: '' };
    for (;;) {
      const before = at;
      skipSpace();
      if (input.startsWith('/>', at)) {
        at += 2;
        return el;
      }
      if (input[at] === '>') {
        at += 1;
        break;
      }
      if (at === before) fail(`space or the end of <${el.name}> was expected`);
      const attribute = name();
      skipSpace();
      if (input[at] !== '=') fail(`"=" after attribute ${attribute}`);
      at += 1;
      skipSpace();
      const quote = input[at];
      if (quote !== '"' && quote !== "'") return fail(`attribute ${attribute}'s value is not quoted`);
      at += 1;
      if (Object.hasOwn(el.attributes, attribute)) fail(`attribute ${attribute} twice`);
      el.attributes[attribute] = decode(until(quote, `attribute ${attribute}'s value`));
    }
    for (;;) {
      const next = input.indexOf('<', at);
      if (next < 0) fail(`<${el.name}> is not closed`);
      el.text += decode(input.slice(at, next));
      at = next;
      if (input.startsWith('</', at)) {
        at += 2;
        const closing = name();
        if (closing !== el.name) fail(`</${closing}> closes <${el.name}>`);
        skipSpace();
        if (input[at] !== '>') fail(`">" after </${closing}`);
        at += 1;
        return el;
      }
      if (input.startsWith('<![CDATA[', at)) {
        at += 9;
        el.text += until(']]>', 'a CDATA section');
      } else if (input.startsWith('<!', at)) {
        if (!misc()) fail('a document type declaration or other markup S3 does not send');
      } else if (!misc()) {
        el.children.push(element(depth + 1));
      }
    }
  };

  if (input.startsWith('<?xml', at) && /[ \t\r\n?]/.test(input[at + 5] ?? '')) {
    at += 5;
    until('?>', 'the XML declaration');
  }
  for (;;) {
    skipSpace();
    if (input.startsWith('<!DOCTYPE', at)) fail('a document type declaration (refused: no S3 answer has one)');
    if (!misc()) break;
  }
  if (input[at] !== '<') fail('the document has no root element');
  const root = element(1);
  for (;;) {
    skipSpace();
    if (at >= input.length) return root;
    if (!misc()) fail('content after the root element');
  }
}

/** The first child element named `name`, if any. */
export function child(el: XmlElement, name: string): XmlElement | undefined {
  return el.children.find((c) => c.name === name);
}

/** Every child element named `name`. */
export function childrenNamed(el: XmlElement, name: string): XmlElement[] {
  return el.children.filter((c) => c.name === name);
}

/** The text of the first child element named `name`, or undefined. */
export function childText(el: XmlElement, name: string): string | undefined {
  return child(el, name)?.text;
}
