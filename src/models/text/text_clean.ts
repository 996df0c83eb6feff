/**
 * Caption cleaning as CLIP's reference tokenizer does it: ftfy.fix_text, html.unescape twice,
 * whitespace collapse, strip. ftfy has no JavaScript port, so `fixTextLite` covers only its
 * deterministic per-character fixes (NFC, curly quotes, Latin ligatures, full-width forms, control
 * characters, line breaks); its mojibake repair (re-decoding mis-encoded UTF-8) is not reproduced,
 * so text that is already mojibake tokenizes differently from the Python reference.
 */

/** Python's str.isspace() set, which `\s` in Python's `re`/`regex` matches; JS `\s` differs (\x1c-\x1f, \x85, \ufeff). */
export const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const SPACE_RUN = new RegExp(`[${PY_SPACE}]+`, 'gu');
const LEADING_SPACE = new RegExp(`^[${PY_SPACE}]+`, 'u');
const TRAILING_SPACE = new RegExp(`[${PY_SPACE}]+$`, 'u');

export function pyStrip(text: string): string {
  return text.replace(LEADING_SPACE, '').replace(TRAILING_SPACE, '');
}

export function whitespaceClean(text: string): string {
  return pyStrip(text.replace(SPACE_RUN, ' '));
}

// HTML 4 Latin-1 entities name code points 0xA0..0xFF in order; HTML5 also accepts them without ';'.
const LATIN1_ENTITY_NAMES = (
  'nbsp iexcl cent pound curren yen brvbar sect uml copy ordf laquo not shy reg macr deg plusmn sup2 sup3 ' +
  'acute micro para middot cedil sup1 ordm raquo frac14 frac12 frac34 iquest Agrave Aacute Acirc Atilde Auml ' +
  'Aring AElig Ccedil Egrave Eacute Ecirc Euml Igrave Iacute Icirc Iuml ETH Ntilde Ograve Oacute Ocirc Otilde ' +
  'Ouml times Oslash Ugrave Uacute Ucirc Uuml Yacute THORN szlig agrave aacute acirc atilde auml aring aelig ' +
  'ccedil egrave eacute ecirc euml igrave iacute icirc iuml eth ntilde ograve oacute ocirc otilde ouml divide ' +
  'oslash ugrave uacute ucirc uuml yacute thorn yuml'
).split(' ');

const LEGACY_ENTITIES: Record<string, string> = { amp: '&', AMP: '&', lt: '<', LT: '<', gt: '>', GT: '>', quot: '"', QUOT: '"', COPY: '©', REG: '®' };

// Semicolon-only entities common in scraped captions; the full HTML5 table (2,231 names) is not carried.
const OTHER_ENTITIES: Record<string, number> = {
  apos: 0x27, OElig: 0x152, oelig: 0x153, Scaron: 0x160, scaron: 0x161, Yuml: 0x178, fnof: 0x192, circ: 0x2c6,
  tilde: 0x2dc, ensp: 0x2002, emsp: 0x2003, thinsp: 0x2009, zwnj: 0x200c, zwj: 0x200d, lrm: 0x200e, rlm: 0x200f,
  ndash: 0x2013, mdash: 0x2014, lsquo: 0x2018, rsquo: 0x2019, sbquo: 0x201a, ldquo: 0x201c, rdquo: 0x201d,
  bdquo: 0x201e, dagger: 0x2020, Dagger: 0x2021, bull: 0x2022, hellip: 0x2026, permil: 0x2030, prime: 0x2032,
  Prime: 0x2033, lsaquo: 0x2039, rsaquo: 0x203a, euro: 0x20ac, trade: 0x2122, larr: 0x2190, uarr: 0x2191,
  rarr: 0x2192, darr: 0x2193, harr: 0x2194, minus: 0x2212, infin: 0x221e, ne: 0x2260, le: 0x2264, ge: 0x2265,
  asymp: 0x2248, hearts: 0x2665, star: 0x2606, check: 0x2713, half: 0xbd,
};

/** Keys as Python's html.entities.html5 spells them: "name;" always, bare "name" for legacy entities. */
const HTML5 = new Map<string, string>();
LATIN1_ENTITY_NAMES.forEach((name, i) => {
  const ch = String.fromCodePoint(0xa0 + i);
  HTML5.set(name, ch);
  HTML5.set(`${name};`, ch);
});
for (const [name, ch] of Object.entries(LEGACY_ENTITIES)) {
  HTML5.set(name, ch);
  HTML5.set(`${name};`, ch);
}
for (const [name, cp] of Object.entries(OTHER_ENTITIES)) HTML5.set(`${name};`, String.fromCodePoint(cp));

export const LATIN1_ENTITY_COUNT = LATIN1_ENTITY_NAMES.length;

// Python maps numeric references 0x80..0x9F through windows-1252 (as browsers do), 0 to U+FFFD, 13 to CR.
// (Node's TextDecoder treats the 'windows-1252' label as plain Latin-1, so the table is spelt out.)
const CP1252_C1 = [
  0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021, 0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f,
  0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014, 0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
];
function invalidCharref(num: number): string | undefined {
  if (num === 0) return '\ufffd';
  if (num === 0x0d) return '\r';
  if (num >= 0x80 && num <= 0x9f) return String.fromCodePoint(CP1252_C1[num - 0x80]!);
  return undefined;
}

function isInvalidCodepoint(num: number): boolean {
  return (
    (num >= 0x1 && num <= 0x8) ||
    num === 0xb ||
    (num >= 0xe && num <= 0x1f) ||
    (num >= 0x7f && num <= 0x9f) ||
    (num >= 0xfdd0 && num <= 0xfdef) ||
    (num & 0xfffe) === 0xfffe
  );
}

const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/g;

/** Python's html.unescape, with the entity table limited as noted above. */
export function htmlUnescape(text: string): string {
  if (!text.includes('&')) return text;
  return text.replace(CHARREF, (_m, s: string) => {
    if (s[0] === '#') {
      const hex = s[1] === 'x' || s[1] === 'X';
      const digits = s.slice(hex ? 2 : 1).replace(/;$/, '');
      const num = parseInt(digits, hex ? 16 : 10);
      const invalid = invalidCharref(num);
      if (invalid !== undefined) return invalid;
      if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return '\ufffd';
      if (isInvalidCodepoint(num)) return '';
      return String.fromCodePoint(num);
    }
    const whole = HTML5.get(s);
    if (whole !== undefined) return whole;
    for (let x = s.length - 1; x > 1; x--) {
      const prefix = HTML5.get(s.slice(0, x));
      if (prefix !== undefined) return prefix + s.slice(x);
    }
    return `&${s}`;
  });
}

// ftfy's fix_text defaults, character-level part (see module comment).
const CURLY_SINGLE = /[\u02bc\u2018-\u201b]/g;
const CURLY_DOUBLE = /[\u201c-\u201f]/g;
const LIGATURES = /[\u0132\u0133\u0149\u01c4-\u01cc\u01f1-\u01f3\ufb00-\ufb06]/g;
const WIDE_FORMS = /[\u3000\uff01-\uffef]/g;
const CONTROL = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc\u{1d173}-\u{1d17a}\u{e0000}-\u{e007f}]/gu;

export function fixTextLite(text: string): string {
  return text
    .replace(/\r\n|[\r\u2028\u2029\x85]/g, '\n')
    .replace(CONTROL, '')
    .replace(LIGATURES, (c) => c.normalize('NFKC'))
    .replace(WIDE_FORMS, (c) => {
      const n = c.normalize('NFKC');
      return n.length === 1 ? n : c;
    })
    .replace(CURLY_SINGLE, "'")
    .replace(CURLY_DOUBLE, '"')
    .normalize('NFC');
}

/** basic_clean + whitespace_clean + lower(), the order CLIP's SimpleTokenizer.encode applies them. */
export function clipClean(text: string): string {
  const unescaped = htmlUnescape(htmlUnescape(fixTextLite(text)));
  return whitespaceClean(pyStrip(unescaped)).toLowerCase();
}
