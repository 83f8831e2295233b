"""2-D windows on (N, H, W, C) arrays: convolution and pooling, forward and backward, written against
the array namespace `xp` (crossnn_numpy.xp) as pure functions. Emitted NumPy scripts carry these
functions' source and call them with `np`.

A window layer sees the input padded to xp (N, Hp, Wp, C). Window offset (a, b) of a kh × kw window
with stride (sh, sw) and dilation (dh, dw) picks, for every output position (i, j), the element
xp[:, i·sh + a·dh, j·sw + b·dw, :]: one strided slice of xp per offset (`window_slices`). Every
window operation is a function of those kh·kw slices, so its backward pass needs only the adjoint of
a strided slice (`unslice`: the gradient put back at the positions the slice took, zeros elsewhere),
summed over the offsets, and the padding cropped off. Convolution stacks the slices into the im2col
matrix (N·Ho·Wo, kh·kw·C) and multiplies it by the kernel reshaped to (kh·kw·C, out).
"""

from __future__ import annotations


def pad2d(xp, x, pads, value=0.0):
    """x (N, H, W, C) padded by pads = (top, bottom, left, right) with `value`."""
    top, bottom, left, right = pads
    if not (top or bottom or left or right):
        return x
    return xp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def crop2d(x, pads):
    """The inverse of pad2d's shape change: x without its padded border."""
    top, bottom, left, right = pads
    return x[:, top:x.shape[1] - bottom, left:x.shape[2] - right, :]


def window_slices(xp_, window, strides, dilation, out):
    """The kh·kw strided slices (N, Ho, Wo, C) of the padded input xp_, offset (a, b) at a·kw + b."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = window, strides, dilation, out
    return [xp_[:, a * dh:a * dh + (ho - 1) * sh + 1:sh, b * dw:b * dw + (wo - 1) * sw + 1:sw, :]
            for a in range(kh) for b in range(kw)]


def unslice(xp, piece, offset, strides, padded_shape):
    """The adjoint of one window slice: an array of padded_shape (N, Hp, Wp, C) that holds piece
    (N, Ho, Wo, C) at rows offset[0] + i·sh and columns offset[1] + j·sw, zeros elsewhere. Each
    spatial axis is spread by its stride (zeros put between the elements by padding a new axis and
    merging it in), then padded into place."""
    n, ho, wo, c = piece.shape
    (sh, sw), (top, left), (hp, wp) = strides, offset, padded_shape[1:3]
    if sh > 1:
        piece = xp.pad(piece[:, :, None], ((0, 0), (0, 0), (0, sh - 1), (0, 0), (0, 0)))
        piece = piece.reshape(n, ho * sh, wo, c)[:, :(ho - 1) * sh + 1]
    if sw > 1:
        piece = xp.pad(piece[:, :, :, None], ((0, 0), (0, 0), (0, 0), (0, sw - 1), (0, 0)))
        piece = piece.reshape(n, piece.shape[1], wo * sw, c)[:, :, :(wo - 1) * sw + 1]
    return xp.pad(piece, ((0, 0), (top, hp - top - piece.shape[1]), (left, wp - left - piece.shape[2]), (0, 0)))


def gather_windows(xp, pieces, window, strides, dilation, padded_shape, pads):
    """Σ over the window offsets of unslice(pieces[a·kw + b]), with the padding cropped off: the
    gradient of the unpadded input, given the gradient of each window slice."""
    (kh, kw), (dh, dw) = window, dilation
    total = None
    for a in range(kh):
        for b in range(kw):
            part = unslice(xp, pieces[a * kw + b], (a * dh, b * dw), strides, padded_shape)
            total = part if total is None else total + part
    return crop2d(total, pads)


def conv2d_forward(xp, x, kernel, bias, strides, dilation, pads, out):
    """z = conv(x) + bias (see crossnn.spec.Conv2D), and the im2col matrix backward needs.
    x (N, H, W, C), kernel (kh, kw, C, O), bias (O,) or None; out = (Ho, Wo)."""
    kh, kw, c, o = kernel.shape
    n = x.shape[0]
    cols = xp.stack(window_slices(pad2d(xp, x, pads), (kh, kw), strides, dilation, out), 3)
    cols = cols.reshape(n * out[0] * out[1], kh * kw * c)
    z = xp.matmul(cols, kernel.reshape(kh * kw * c, o))
    if bias is not None:
        z = z + bias
    return z.reshape(n, out[0], out[1], o), cols


def conv2d_backward(xp, dz, cols, kernel, x_shape, strides, dilation, pads, need_dx=True):
    """(dx or None, dkernel, dbias) of conv2d_forward: dkernel = colsᵀ dz, dbias = Σ dz,
    dx = the window slices' gradients dz kernelᵀ gathered back into x's shape."""
    kh, kw, c, o = kernel.shape
    n, ho, wo, _ = dz.shape
    dz2 = dz.reshape(n * ho * wo, o)
    dkernel = xp.matmul(cols.T, dz2).reshape(kh, kw, c, o)
    dbias = xp.sum(dz2, axis=0)
    if not need_dx:
        return None, dkernel, dbias
    dcols = xp.matmul(dz2, kernel.reshape(kh * kw * c, o).T).reshape(n, ho, wo, kh * kw, c)
    padded = (n, x_shape[1] + pads[0] + pads[1], x_shape[2] + pads[2] + pads[3], c)
    pieces = [dcols[:, :, :, k, :] for k in range(kh * kw)]
    return gather_windows(xp, pieces, (kh, kw), strides, dilation, padded, pads), dkernel, dbias


def max_pool_forward(xp, x, window, strides, pads, out):
    """y = the largest value of each window (padding counts as -inf), and the index of the first
    largest offset of each window, for backward."""
    stacked = xp.stack(window_slices(pad2d(xp, x, pads, -float("inf")), window, strides, (1, 1), out), 3)
    return xp.amax(stacked, 3), xp.argmax(stacked, 3)


def max_pool_backward(xp, dy, first, x_shape, window, strides, pads):
    """dx: each window's gradient goes to its first largest element (summed where windows overlap)."""
    padded = (x_shape[0], x_shape[1] + pads[0] + pads[1], x_shape[2] + pads[2] + pads[3], x_shape[3])
    pieces = [xp.where(first == k, dy, 0.0) for k in range(window[0] * window[1])]
    return gather_windows(xp, pieces, window, strides, (1, 1), padded, pads)


def avg_pool_divisor(xp, x, window, strides, pads, out, count_padding):
    """The divisor of each output position (1, Ho, Wo, 1): kh·kw with count_padding, else how many
    of the window's positions lie inside the input (the window sum of a padded all-ones image)."""
    if count_padding or not any(pads):
        return float(window[0] * window[1])
    ones = pad2d(xp, xp.ones_like(x[:1, :, :, :1]), pads)
    total = None
    for piece in window_slices(ones, window, strides, (1, 1), out):
        total = piece if total is None else total + piece
    return total


def avg_pool_forward(xp, x, window, strides, pads, out, divisor):
    """y = the window sums of the zero-padded input over `divisor` (avg_pool_divisor)."""
    total = None
    for piece in window_slices(pad2d(xp, x, pads), window, strides, (1, 1), out):
        total = piece if total is None else total + piece
    return total / divisor


def avg_pool_backward(xp, dy, x_shape, window, strides, pads, divisor):
    """dx: every element of a window gets the window's dy / divisor."""
    padded = (x_shape[0], x_shape[1] + pads[0] + pads[1], x_shape[2] + pads[2] + pads[3], x_shape[3])
    share = dy / divisor
    return gather_windows(xp, [share] * (window[0] * window[1]), window, strides, (1, 1), padded, pads)
