#!/usr/bin/perl
# cuemu_rewrite.pl IN OUT: a CUDA source made C++ for the CPU emulator (tests/cuemu/README.md). Two rewrites, nothing
# else: a launch `kern<...><<<grid, block[, smem[, stream]]>>>(args);` becomes
# `cuemu::launch("kern", __FILE__, __LINE__, [&]() { kern<...>(args); }, grid, block[, smem[, stream]]);`
# and `extern __shared__ T name[];` becomes `T *name = (T *)cuemu::dyn_smem();`. Line numbers are kept (#line).
use strict;
use warnings;

my ($in, $out) = @ARGV;
die "usage: cuemu_rewrite.pl IN OUT\n" unless defined $out;
open(my $fh, '<', $in) or die "cuemu_rewrite.pl: cannot read $in: $!\n";
my $src = do { local $/; <$fh> };
close $fh;

# the end index (exclusive) of the bracketed group that opens at $i ($open at substr($s, $i, 1))
sub group_end {
    my ($s, $i, $open, $close) = @_;
    my $depth = 0;
    for (my $j = $i; $j < length $s; $j++) {
        my $c = substr($s, $j, 1);
        $depth++ if $c eq $open;
        if ($c eq $close) {
            $depth--;
            return $j + 1 if $depth == 0;
        }
    }
    die "cuemu_rewrite.pl: $in: unbalanced '$open' at offset $i\n";
}

my $n = 0;
my $res = '';
while ((my $at = index($src, '<<<')) >= 0) {
    # the callee: an identifier, optionally with a balanced <...> template argument list, just before <<<
    my $k = $at;
    my $end = $k;
    if (substr($src, $k - 1, 1) eq '>') {
        my $depth = 0;
        for ($k = $k - 1; $k >= 0; $k--) {
            my $c = substr($src, $k, 1);
            $depth++ if $c eq '>';
            $depth-- if $c eq '<';
            last if $depth == 0;
        }
    }
    my $name_end = $k;
    $k-- while $k > 0 && substr($src, $k - 1, 1) =~ /[\w:]/;
    my $callee = substr($src, $k, $at - $k);
    my $name = substr($src, $k, $name_end - $k);
    die "cuemu_rewrite.pl: $in: no kernel name before '<<<' at offset $at\n" unless $name =~ /^[\w:]+$/;
    my $cfg_end = index($src, '>>>', $at);
    die "cuemu_rewrite.pl: $in: '<<<' without '>>>' at offset $at\n" if $cfg_end < 0;
    my $cfg = substr($src, $at + 3, $cfg_end - $at - 3);
    my $p = $cfg_end + 3;
    $p++ while substr($src, $p, 1) =~ /\s/;
    die "cuemu_rewrite.pl: $in: kernel $name: no '(' after '>>>'\n" unless substr($src, $p, 1) eq '(';
    my $args_end = group_end($src, $p, '(', ')');
    my $args = substr($src, $p, $args_end - $p);
    # keep the line count: the launch's newlines move to the end of the rewritten call
    my $orig = substr($src, $k, $args_end - $k);
    my $nl = ($orig =~ tr/\n//);
    my $in_macro = ($orig =~ /\\\n/);
    $args =~ s/\\\n/ /g;
    $cfg =~ s/\\\n/ /g;
    (my $flat_args = $args) =~ s/\s*\n\s*/ /g;
    (my $flat_cfg = $cfg) =~ s/\s*\n\s*/ /g;
    $res .= substr($src, 0, $k)
          . "cuemu::launch(\"$name\", __FILE__, __LINE__, [&]() { $callee$flat_args; }, $flat_cfg)" . ($in_macro ? " \\\n" : "\n") x $nl;
    $src = substr($src, $args_end);
    $n++;
}
$res .= $src;

my $ns = ($res =~ s{extern\s+__shared__\s+(?:__align__\(\d+\)\s+)?([\w:]+(?:\s*\*)?)\s+(\w+)\s*\[\s*\]\s*;}
                   {$1 *$2 = ($1 *)cuemu::dyn_smem();}g);

open(my $oh, '>', "$out.tmp") or die "cuemu_rewrite.pl: cannot write $out: $!\n";
print $oh "#line 1 \"$in\"\n", $res;
close $oh or die "cuemu_rewrite.pl: cannot write $out: $!\n";
rename("$out.tmp", $out) or die "cuemu_rewrite.pl: cannot rename to $out: $!\n";
