/*
 * parse.c: splitting the command line into pieces and reading numbers out
 * of them. Nothing here trusts the input: every loop is bounded by the
 * piece's length and every number is checked for overflow.
 */
#include "guest.h"

bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

bool is_comma(char c)
{
	return c == ',';
}

bool is_colon(char c)
{
	return c == ':';
}

bool span_eq(struct span s, const char *lit)
{
	return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

bool take_prefix(struct span *s, const char *prefix)
{
	size_t n = strlen(prefix);

	if (s->n < n || memcmp(s->p, prefix, n) != 0)
		return false;
	s->p += n;
	s->n -= n;
	return true;
}

struct span next_piece(struct span *rest, bool (*is_sep)(char))
{
	struct span piece = { rest->p, 0 };

	while (piece.n < rest->n && !is_sep(rest->p[piece.n]))
		piece.n++;
	rest->p += piece.n;
	rest->n -= piece.n;
	if (rest->n) {		/* skip the separator */
		rest->p++;
		rest->n--;
	}
	return piece;
}

bool parse_u8(struct span s, uint8_t *out)
{
	uint64_t v;

	if (!parse_dec(s, &v) || v > 255)
		return false;
	*out = (uint8_t)v;
	return true;
}

/* Digits in `base` (10 or 16) only; false if none or on overflow. */
static bool parse_digits(struct span s, unsigned base, uint64_t *out)
{
	uint64_t v = 0;

	if (s.n == 0)
		return false;
	for (size_t i = 0; i < s.n; i++) {
		char c = s.p[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (base == 16 && c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a') + 10;
		else if (base == 16 && c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A') + 10;
		else
			return false;
		if (v > (UINT64_MAX - d) / base)
			return false;
		v = v * base + d;
	}
	*out = v;
	return true;
}

bool parse_dec(struct span s, uint64_t *out)
{
	return parse_digits(s, 10, out);
}

bool parse_num(struct span s, uint64_t *out)
{
	if (take_prefix(&s, "0x") || take_prefix(&s, "0X"))
		return parse_digits(s, 16, out);
	return parse_digits(s, 10, out);
}
